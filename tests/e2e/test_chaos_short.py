"""The chaos bench, short: 20 SIGKILLs of the real gateway process while real MQTT nodes publish at QoS 1.

``bench/chaos.py`` runs the gateway as a process, five paho nodes publishing uniquely numbered samples,
and the reference receiver on PostgreSQL behind a proxy that cuts the link now and then; the receiver is
SIGKILLed too. Each kill waits for observed progress (new PUBACKs at the nodes and new rows committed by
the running gateway), never for a guessed delay, so the outcome does not depend on the machine's speed.
Every sample a node got a PUBACK for must be in PostgreSQL exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KILLS = 20


@pytest.mark.slow
@pytest.mark.timeout(900)  # 20 gateway starts on a busy 2-core machine; every wait in the bench is bounded
def test_twenty_gateway_kills_lose_and_duplicate_no_acknowledged_sample(tmp_path: Path, postgres_dsn: str) -> None:
    out = tmp_path / "chaos.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--kills", str(KILLS), "--seed", "14", "--nodes", "5",
         "--rate", "150", "--receiver-kill-prob", "0.2", "--cut-prob", "0.2", "--final-cut-s", "3",
         "--dsn", postgres_dsn, "--workdir", str(tmp_path), "--json-out", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=870, check=False,
    )
    assert proc.returncode in (0, 1), f"the chaos run itself failed:\n{proc.stderr[-3000:]}"
    figures = json.loads(out.read_text())
    report = proc.stdout
    assert figures["kills"] == KILLS, report
    assert figures["receiver_kills"] >= 1 and figures["cuts"] >= 1, report  # the seed's schedule has both
    assert figures["acked"] > KILLS, report
    assert figures["unacked_at_end"] == 0, report  # every sample got its PUBACK in the end
    assert figures["acked_twice"] == 0, report
    assert figures["lost"] == 0, report
    assert figures["duplicated"] == 0, report
    assert proc.returncode == 0, report
