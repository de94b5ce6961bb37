"""Smoke run of ``bench/fleet.py``: a small herd, many lost responses, and still every sample stored once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_fleet_drains_with_forced_cross_receiver_retries_and_no_duplicates(fresh_postgres_dsn: str) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/fleet.py", "--gateways", "6", "--hours", "0.02", "--rows", "50", "--receivers", "2",
         "--uplink-procs", "1", "--drop-rate", "0.3", "--dsn", fresh_postgres_dsn],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "all 6 gateways idle" in out
    assert "stored: 2,160 rows, 2,160 distinct" in out and "duplicates stored = 0; missing = 0" in out
    lost = re.search(r"forced retries: (\d+) responses lost after commit, (\d+) batches then stored", out)
    assert lost is not None and int(lost[1]) > 0 and int(lost[2]) > 0, out  # the retries did happen elsewhere
