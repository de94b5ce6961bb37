"""A full disk under the real gateway process: loud, alive, and the outage recorded as a gap once space returns.

The data directory is a 20 MB tmpfs (mounting needs root: skipped with the reason otherwise). A real paho
node (tests/e2e/load_publisher.py) keeps publishing while the test fills the filesystem, restarts the
gateway while it is full, then frees the space again.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.e2e import gateway_proc
from tests.e2e.gateway_proc import ROOT

FS_MB = 20


@contextlib.contextmanager
def small_filesystem(path: Path) -> Iterator[Path]:
    """A size-limited tmpfs at ``path`` (skips the test when mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_MB}m", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {FS_MB} MB tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _wait(what: str, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def _fill(directory: Path) -> Path:
    filler = directory / "filler.bin"
    chunk = b"\0" * (256 * 1024)
    # Unbuffered: nothing is left to flush (and fail) when the file closes on a full disk.
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(chunk)
    return filler


def _alerts(port: int) -> dict[str, dict[str, Any]]:
    return {a["code"]: a for a in _get(port, "/api/alerts")[1]["active"]}


@pytest.mark.slow
def test_full_disk_alerts_survives_restarts_and_records_the_gap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures: dict[str, float] = {}
    with small_filesystem(tmp_path / "fs") as fs:
        data = fs / "data"
        mqtt_port, http_port = free_port(), free_port()
        config = gateway_proc.write_config(
            tmp_path, gateway_id="gw-diskfull", mqtt_port=mqtt_port, http_port=http_port, data_dir=data,
            ingest={"flush_interval_ms": 100}, storage={"reserve_bytes": 2097152, "poll_s": 0.5},
            automation={"aggregate_interval_s": 1.0})
        log = tmp_path / "gateway.log"  # shared by both runs
        gw = gateway_proc.start(config, log)
        node = subprocess.Popen([sys.executable, str(ROOT / "tests/e2e/load_publisher.py"), str(mqtt_port), "300"],
                                cwd=ROOT)
        try:
            gateway_proc.wait_healthy(http_port, gw)
            assert (data / "storage-reserve.bin").stat().st_size == 2097152
            _wait("telemetry committed", lambda: _get(http_port, "/api/status")[1]["ingest"]["committed"] > 300)

            filled_at = time.time()
            filler = _fill(fs)
            # Loud: the full disk is on /api/alerts (from memory if it cannot be stored), status and /healthz.
            alerts = _wait("infra_disk_full alert", lambda: (a := _alerts(http_port)).get("infra_disk_full") and a)
            figures["alert_after_fill_s"] = time.time() - filled_at
            assert alerts["infra_disk_full"]["severity"] == "critical"
            assert alerts["infra_disk_low"]["details"]["level"] in ("high", "critical")
            status = _wait("storage_level full", lambda: (s := _get(http_port, "/api/status")[1])["storage_level"]
                           == "full" and s)
            assert status["ingest"]["last_commit_error"] == "database or disk is full"
            assert not (data / "storage-reserve.bin").exists()  # released when the disk filled up
            health = _get(http_port, "/healthz")
            assert health[0] == 503 and health[1]["storage_level"] == "full"
            # Alive while full, through several aggregation runs (that crashed the process before).
            runs = _get(http_port, "/api/status")[1]["uptime_s"]
            _wait("aggregation retried while full", lambda: _get(http_port, "/api/status")[1]["uptime_s"] > runs + 5)
            assert gw.poll() is None, "the gateway exited while the disk was full"

            # A restart while full comes up (degraded), and stays up: no crash loop.
            gateway_proc.kill9(gw)
            restarted_at = time.time()
            gw = gateway_proc.start(config, log)
            _wait("answering again", lambda: _get(http_port, "/healthz")[0] in (200, 503))
            figures["restart_while_full_answering_s"] = time.time() - restarted_at
            _wait("up again while full", lambda: _get(http_port, "/healthz")[1].get("storage_level") == "full")
            assert "infra_disk_full" in _alerts(http_port)
            started = time.monotonic()
            _wait("5 s after the restart", lambda: time.monotonic() - started > 5 or gw.poll() is not None)
            assert gw.poll() is None, "the gateway exited after a restart on a full disk"

            # Space returns: ingest resumes, the alerts are stored and resolved, the gap is recorded.
            committed = _get(http_port, "/api/status")[1]["ingest"]["committed"]
            filler.unlink()
            freed_at = time.time()
            _wait("healthy again", lambda: _get(http_port, "/healthz")[0] == 200)
            figures["healthy_after_free_s"] = time.time() - freed_at
            _wait("ingest resumed", lambda: _get(http_port, "/api/status")[1]["ingest"]["committed"] > committed + 300)
            _wait("reserve allocated again", lambda: (data / "storage-reserve.bin").exists())
            _wait("disk alerts resolved", lambda: not {"infra_disk_full", "infra_disk_low"} & set(_alerts(http_port)))
            assert _get(http_port, "/api/status")[1]["storage"]["gaps_recorded"] >= 1
        finally:
            node.terminate()
            node.wait()
            gateway_proc.kill9(gw)

        with sqlite3.connect(data / "gateway.db") as conn:
            gaps = conn.execute("SELECT first_ts, last_ts, reason FROM sync_gaps WHERE reason='disk_full'").fetchall()
            # One gap spans the restart: from when the disk filled up until space returned.
            assert any(first <= filled_at + 5 and last - first > 5 for first, last, _ in gaps), gaps
            figures["gap_window_s"] = max(last - first for first, last, _ in gaps)
        with capsys.disabled():
            print("\ndisk full figures: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
            events = [json.loads(r[0]) for r in conn.execute(
                "SELECT body FROM sync_outbox WHERE stream='zone_events'")]
            assert any(e["type"] == "TELEMETRY_GAP" and e["details"]["reason"] == "disk_full" for e in events)
            stored = conn.execute("SELECT code, status FROM alerts WHERE code IN ('infra_disk_full')").fetchall()
            assert ("infra_disk_full", "RESOLVED") in stored
