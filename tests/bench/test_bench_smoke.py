"""Smoke run of the ingest benchmark machinery (``bench/ingest.py --quick``).

Both systems (the gateway as a subprocess, and the seed-style mosquitto + paho + sqlite3 baseline)
take a tiny load from real paho clients in a separate process. The test checks that every sample
arrives exactly once and that the report prints; it never asserts throughput, which depends on the
machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_quick_bench_loses_nothing_and_prints_the_report(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "ingest.py"), "--quick", "--workdir", str(tmp_path / "work"),
         "--json-out", str(results)],
        cwd=REPO, capture_output=True, text=True, timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = proc.stdout
    assert "max sustained single msg/s" in report
    assert "hydro-gateway" in report and "baseline (mosquitto+paho+sqlite3)" in report

    data = json.loads(results.read_text())
    systems = {r["system"]: r for r in data["results"]}
    assert set(systems) == {"gateway", "baseline"}
    for name, result in systems.items():
        modes = {s["mode"] for s in result["steps"]}
        assert modes == {"single", "batch10"}, name
        for step in result["steps"]:
            assert step["sent_samples"] > 0, (name, step)
            assert step["all_acked"], (name, step)
            assert step["lost"] == 0 and step["duplicates"] == 0, (name, step)
            assert step["committed"] == step["sent_samples"], (name, step)
        assert result["peak_rss_mb"], name
