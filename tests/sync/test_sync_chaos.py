"""kill -9 chaos: the uplink process is SIGKILLed at random moments and restarted; Postgres ends exact."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from gateway.store.db import Database
from gateway.tools.seed_db import add_outbox, add_samples, migrate
from sync.streams import OUTBOX_STREAMS
from tests.sync.synckit import ADMIN, TOKEN

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = 30_000
SAMPLES_PER_RUN = 1_500  # "ingest" keeps writing from another process while the uplink runs
OUTBOX_PER_STREAM = 300
KILLS = 22


@pytest.fixture
def receiver_process(postgres_dsn: str) -> Iterator[str]:
    """``python -m sync.receiver`` as a real process with slow, flaky, lossy answers; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync.receiver", "--dsn", postgres_dsn, "--port", "0", "--token", TOKEN,
         "--admin-token", ADMIN, "--slow-ms", "8", "--slow-jitter-ms", "12", "--fail-rate", "0.05",
         "--drop-after-commit-rate", "0.1", "--seed", "11"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on"), line
    try:
        yield "http://" + line.split()[-1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        proc.stdout.close()


def _pump(db: Path, url: str, gateway: str, rows: int, *, until_idle: bool) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "gateway.tools.pump_outbox", "--db", str(db), "--url", url, "--token", TOKEN,
            "--gateway-id", gateway, "--telemetry-max-rows", str(rows), "--max-rows", str(max(1, rows // 20)),
            "--backoff-base", "0.05", "--backoff-cap", "0.3", "--idle-poll", "0.2"]
    if until_idle:
        args.append("--until-idle")
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.timeout(600)  # 22 process starts on a busy 2-core machine; every wait inside is bounded
async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, receiver_process: str, postgres_dsn: str, gateway_id: str
) -> None:
    db_path = tmp_path / "gateway.sqlite"
    await migrate(db_path)
    add_samples(db_path, SAMPLES)
    add_outbox(db_path, OUTBOX_PER_STREAM)
    rng = random.Random(20260101)

    # Kills are driven by what the receiver has stored, not by the clock: each run is killed only once
    # PostgreSQL holds more rows than at the previous kill (plus a random stride), so every kill lands
    # mid-upload, after real progress, however fast or slow this machine is.
    conn = await asyncpg.connect(postgres_dsn)
    progress: list[int] = []  # the local cursor after each kill
    stored_at_kill: list[int] = []
    try:
        stored = 0
        for _ in range(KILLS):
            proc = _pump(db_path, receiver_process, gateway_id, rng.choice((50, 120, 250, 400)), until_idle=False)
            writer = asyncio.create_task(asyncio.to_thread(add_samples, db_path, SAMPLES_PER_RUN))
            target = stored + rng.choice((1, 60, 200, 500, 900))
            stored = await _wait_stored(conn, gateway_id, target, proc)
            await writer
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            proc.communicate()
            stored = await _stored(conn, gateway_id)
            stored_at_kill.append(stored)
            progress.append(await _cursor(db_path))
    finally:
        await conn.close()

    started = time.monotonic()
    final = _pump(db_path, receiver_process, gateway_id, 2000, until_idle=True)
    out, err = await asyncio.to_thread(final.communicate, timeout=60)
    assert final.returncode == 0, err[-2000:]
    status = json.loads(out)
    assert all(s["state"] == "idle" for s in status["streams"].values())
    drain_s = time.monotonic() - started

    total = SAMPLES + KILLS * SAMPLES_PER_RUN
    assert progress == sorted(progress), progress  # a kill never moves the cursor back
    assert stored_at_kill == sorted(set(stored_at_kill)), stored_at_kill  # every run stored something
    conn = await asyncpg.connect(postgres_dsn)
    try:
        pg = {r["seq"]: r["value"] for r in await conn.fetch(
            "SELECT seq, value FROM telemetry_samples WHERE gateway_id = $1", gateway_id)}
        inserted = await conn.fetchval(
            "SELECT sum(inserted) FROM idempotency_keys WHERE gateway_id = $1 AND stream = 'telemetry'", gateway_id)
        duplicates = await conn.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE gateway_id = $1 AND inserted < count", gateway_id)
        outbox = {s: [r["seq"] for r in await conn.fetch(
            "SELECT seq FROM stream_items WHERE gateway_id = $1 AND stream = $2 ORDER BY seq", gateway_id, s)]
            for s in OUTBOX_STREAMS}
    finally:
        await conn.close()

    db = Database(db_path)
    await db.open()
    try:
        local = {int(r[0]): float(r[1]) for r in await db.fetchall("SELECT id, value FROM telemetry_samples")}
        for stream in OUTBOX_STREAMS:
            ids = [int(r[0]) for r in await db.fetchall(
                "SELECT id FROM sync_outbox WHERE stream = ? ORDER BY id", (stream,))]
            assert outbox[stream] == ids, stream
    finally:
        await db.close()
    assert pg == local  # every sample, once, with its value
    assert len(local) == total
    assert inserted == total  # no row was ever inserted twice
    print(f"{KILLS} kills, cursor after each: {progress}; rows upstream after each: {stored_at_kill};"
          f" {duplicates} batches overlapped already-stored rows; final drain {drain_s:.1f}s")


async def _stored(conn: asyncpg.Connection, gateway_id: str) -> int:
    """Rows the receiver holds for this gateway, over every stream."""
    return int(await conn.fetchval(
        "SELECT (SELECT count(*) FROM telemetry_samples WHERE gateway_id = $1)"
        " + (SELECT count(*) FROM stream_items WHERE gateway_id = $1)", gateway_id))


async def _wait_stored(conn: asyncpg.Connection, gateway_id: str, target: int,
                       proc: subprocess.Popen[str], timeout: float = 90.0) -> int:
    """Poll PostgreSQL until the receiver holds at least ``target`` rows (the pump must stay alive)."""
    deadline = time.monotonic() + timeout
    while True:
        stored = await _stored(conn, gateway_id)
        if stored >= target:
            return stored
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"no upload progress: {stored} rows upstream, waiting for {target}"
        await asyncio.sleep(0.01)


async def _cursor(db_path: Path) -> int:
    db = Database(db_path)
    await db.open()
    try:
        row = await db.fetchone("SELECT last_seq FROM sync_cursors WHERE stream = 'telemetry'")
        return int(row[0]) if row else 0
    finally:
        await db.close()
