"""Outage visibility on the real gateway process: with the upstream dead from the start, /api/status and
/metrics show the real, growing backlog (it used to read 0 until the first successful send)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.e2e import gateway_proc
from tests.e2e.gateway_proc import ROOT
from tests.e2e.test_gateway_rollback import _until


def _get(port: int, path: str) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": "Bearer x"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        body: bytes = resp.read()
        return body


def _telemetry_status(port: int) -> dict[str, Any]:
    doc = json.loads(_get(port, "/api/status"))
    [st] = [s for s in doc["sync"]["streams"] if s["stream"] == "telemetry"]
    assert re.fullmatch(r"[0-9a-f]{16}", doc["sync"]["generation"])  # the database generation is shown
    return dict(st)


def _metric_backlog(port: int) -> float:
    text = _get(port, "/metrics").decode()
    found = re.search(r'^hydro_sync_backlog_rows\{stream="telemetry"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.slow
async def test_a_dead_upstream_shows_its_growing_backlog(tmp_path: Path) -> None:
    http_port, mqtt_port = free_port(), free_port()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = gateway_proc.write_config(tmp_path, gateway_id="gw-outage", mqtt_port=mqtt_port, http_port=http_port,
                                       ingest={"flush_interval_ms": 100}, upstream=gateway_proc.upstream(dead, "x"))
    gw = gateway_proc.start(config)
    node = subprocess.Popen([sys.executable, str(ROOT / "tests/e2e/acked_publisher.py"), str(mqtt_port), "200",
                             str(tmp_path / "acks.txt")])
    try:
        await asyncio.to_thread(gateway_proc.wait_healthy, http_port, gw)
        await _until(lambda: _telemetry_status(http_port)["backlog_rows"] >= 1000, "a backlog of 1000 in the API")
        first = _telemetry_status(http_port)
        assert first["last_success_at"] is None
        assert first["catch_up_eta_s"] is None  # unknown while nothing is sent, never a reassuring 0
        assert first["lag_s"] is not None and first["lag_s"] > 0
        await _until(lambda: _metric_backlog(http_port) >= 1000, "a backlog of 1000 in /metrics")
        await _until(lambda: _telemetry_status(http_port)["backlog_rows"] >= first["backlog_rows"] + 1000,
                     "the backlog growing by 1000 more")
        print(f"outage: first {first['backlog_rows']}, later {_telemetry_status(http_port)['backlog_rows']},"
              f" metric {_metric_backlog(http_port)}")
    finally:
        for proc in (node, gw):
            proc.terminate()
            await asyncio.to_thread(proc.wait)
