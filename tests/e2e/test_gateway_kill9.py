"""kill -9 chaos on the whole gateway process during upload: nothing committed is lost or duplicated upstream.

The gateway runs as a real process (``hydro-gateway run``) ingesting from a real MQTT node while it
uploads to the reference receiver (a real process on PostgreSQL). It is SIGKILLed at random moments
20 times and restarted; at the end every row in its SQLite buffer must be in PostgreSQL exactly once.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "kill9-token"
KILLS = 20


def _config(tmp: Path, gateway_id: str, url: str, mqtt_port: int, http_port: int) -> Path:
    path = tmp / "gateway.toml"
    path.write_text(f"""
[gateway]
id = "{gateway_id}"
greenhouse_uid = "gh1"
mode = "demo"
data_dir = "{tmp / 'data'}"
[broker]
host = "127.0.0.1"
port = {mqtt_port}
allow_anonymous = true
[web]
host = "127.0.0.1"
port = {http_port}
admin_token = "x"
[ingest]
flush_interval_ms = 100
[upstream]
url = "{url}"
token = "{TOKEN}"
interval_s = 0.1
telemetry_batch = 300
[hardware]
backend = "sim"
[[zones]]
uid = "zone-a"
[[nodes]]
hardware_id = "esp32-aa01"
uid = "nd-ph-1"
zone = "zone-a"
""")
    return path


def _wait_healthy(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("gateway did not become healthy")


@pytest.mark.slow
async def test_kill9_during_upload_loses_and_duplicates_nothing(tmp_path, postgres_dsn):
    gateway_id = f"gw-k9-{uuid.uuid4().hex[:8]}"
    rx = subprocess.Popen([sys.executable, "-m", "sync.receiver", "--dsn", postgres_dsn, "--port", "0",
                           "--token", TOKEN, "--slow-ms", "5", "--slow-jitter-ms", "20"],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert rx.stdout is not None
    url = "http://" + rx.stdout.readline().split()[-1]
    mqtt_port, http_port = free_port(), free_port()
    config = _config(tmp_path, gateway_id, url, mqtt_port, http_port)
    cmd = [sys.executable, "-m", "gateway", "run", "--config", str(config)]
    load = subprocess.Popen([sys.executable, str(ROOT / "tests/e2e/load_publisher.py"), str(mqtt_port), "300"])
    rng = random.Random(9)
    gw: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(KILLS):
            gw = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)
            await asyncio.to_thread(_wait_healthy, http_port)
            await asyncio.sleep(rng.uniform(0.2, 1.2))
            gw.send_signal(signal.SIGKILL)
            gw.wait()
        load.terminate()
        load.wait()
        gw = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)
        await asyncio.to_thread(_wait_healthy, http_port)
        db = tmp_path / "data" / "gateway.db"
        pg = await asyncpg.connect(postgres_dsn)
        try:
            local: list[int] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with sqlite3.connect(db) as conn:
                    local = [r[0] for r in conn.execute("SELECT id FROM telemetry_samples ORDER BY id")]
                remote = [r["seq"] for r in await pg.fetch(
                    "SELECT seq FROM telemetry_samples WHERE gateway_id=$1 ORDER BY seq", gateway_id)]
                if remote == local and local:
                    break
                await asyncio.sleep(0.5)
            assert len(local) > 1000
            # Every committed sample upstream, in order, exactly once (the receiver's key is
            # (gateway, stream, seq); a retried batch after a kill is answered as a duplicate).
            assert remote == local
        finally:
            await pg.close()
    finally:
        for proc in (gw, load):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        rx.send_signal(signal.SIGTERM)
        rx.wait(timeout=10)
        rx.stdout.close()
