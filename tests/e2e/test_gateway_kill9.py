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
import uuid

import asyncpg
import pytest

from tests.conftest import free_port
from tests.e2e import gateway_proc
from tests.e2e.gateway_proc import ROOT

TOKEN = "kill9-token"
KILLS = 20


@pytest.mark.slow
async def test_kill9_during_upload_loses_and_duplicates_nothing(tmp_path, postgres_dsn):
    gateway_id = f"gw-k9-{uuid.uuid4().hex[:8]}"
    rx = subprocess.Popen([sys.executable, "-m", "sync.receiver", "--dsn", postgres_dsn, "--port", "0",
                           "--token", TOKEN, "--slow-ms", "5", "--slow-jitter-ms", "20"],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert rx.stdout is not None
    url = "http://" + rx.stdout.readline().split()[-1]
    mqtt_port, http_port = free_port(), free_port()
    config = gateway_proc.write_config(tmp_path, gateway_id=gateway_id, mqtt_port=mqtt_port, http_port=http_port,
                                       ingest={"flush_interval_ms": 100}, upstream=gateway_proc.upstream(url, TOKEN))
    load = subprocess.Popen([sys.executable, str(ROOT / "tests/e2e/load_publisher.py"), str(mqtt_port), "300"])
    rng = random.Random(9)
    gw: subprocess.Popen[str] | None = None
    try:
        for _ in range(KILLS):
            gw = gateway_proc.start(config)
            await asyncio.to_thread(gateway_proc.wait_healthy, http_port, gw)
            await asyncio.sleep(rng.uniform(0.2, 1.2))
            gateway_proc.kill9(gw)
        load.terminate()
        load.wait()
        gw = gateway_proc.start(config)
        await asyncio.to_thread(gateway_proc.wait_healthy, http_port, gw)
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
