"""The batched writer on a real SQLite file: catch-up batches, telemetry_last keeps the newest reading."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.clock import SystemClock
from gateway.prometheus import Metrics
from gateway.store.db import Database
from gateway.writer import SampleRow, TelemetryWriter


def row(value: float, ts: float, node_id: int = 1, metric: str = "ph") -> SampleRow:
    return SampleRow(1, node_id, metric, None, value, ts, ts, "node", 1, None)


async def open_db(tmp_path: Path) -> Database:
    db = Database(tmp_path / "gateway.db")
    await db.open()
    return db


async def test_a_writer_that_fell_behind_commits_everything_waiting_in_one_transaction(tmp_path):
    db = await open_db(tmp_path)
    metrics = Metrics()
    writer = TelemetryWriter(db, SystemClock(), metrics, batch_size=100, flush_interval_s=0.05, max_batch=1000)
    # 2,500 rows queued while the writer was not running (as while a slow commit was on the disk).
    await writer.put_many([row(6.0 + i / 10_000, 1000.0 + i) for i in range(2500)])
    task = asyncio.create_task(writer.run())
    try:
        for _ in range(200):
            if writer.committed == 2500:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert writer.committed == 2500
    batches = metrics.registry.get_sample_value("hydro_ingest_batch_rows_count")
    assert batches == 3  # 1000 + 1000 + 500, not 25 commits of 100
    values = [r[0] for r in await db.fetchall("SELECT value FROM telemetry_samples ORDER BY id")]
    assert values == [6.0 + i / 10_000 for i in range(2500)]  # in arrival order
    await db.close()


async def test_telemetry_last_keeps_the_newest_reading_per_node_and_metric_within_and_across_batches(tmp_path):
    db = await open_db(tmp_path)
    writer = TelemetryWriter(db, SystemClock(), Metrics(), batch_size=1000, flush_interval_s=10)
    # Out of order in one batch (a node replaying its backlog), equal timestamps: the later row wins.
    await writer.put_many([row(6.1, 200.0), row(6.5, 500.0), row(6.3, 300.0), row(7.0, 100.0, node_id=2),
                           row(7.1, 100.0, node_id=2), row(1.2, 50.0, metric="ec")])
    await writer.flush()
    last = {(r[0], r[1]): (r[2], r[3]) for r in await db.fetchall(
        "SELECT node_id, metric_type, value, ts FROM telemetry_last")}
    assert last == {(1, "ph"): (6.5, 500.0), (2, "ph"): (7.1, 100.0), (1, "ec"): (1.2, 50.0)}
    # A later batch with an older reading leaves the newer one in place.
    await writer.put_many([row(5.0, 400.0), row(1.3, 60.0, metric="ec")])
    await writer.flush()
    last = {(r[0], r[1]): (r[2], r[3]) for r in await db.fetchall(
        "SELECT node_id, metric_type, value, ts FROM telemetry_last")}
    assert last == {(1, "ph"): (6.5, 500.0), (2, "ph"): (7.1, 100.0), (1, "ec"): (1.3, 60.0)}
    assert (await db.fetchone("SELECT COUNT(*) FROM telemetry_samples"))[0] == 8
    await db.close()


async def test_every_batch_size_is_stored_whole_and_in_order(tmp_path):
    db = await open_db(tmp_path)
    writer = TelemetryWriter(db, SystemClock(), Metrics(), batch_size=10_000, flush_interval_s=10)
    expected: list[float] = []
    for size in (1, 2, 3, 31, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000):
        rows = [row(float(len(expected) + i), 1000.0 + len(expected) + i, node_id=1 + i % 3) for i in range(size)]
        expected += [r.value for r in rows]
        await writer.put_many(rows)
        await writer.flush()
    assert [r[0] for r in await db.fetchall("SELECT value FROM telemetry_samples ORDER BY id")] == expected
    last = {r[0]: r[1] for r in await db.fetchall("SELECT node_id, value FROM telemetry_last")}
    assert last == {n: max(v for i, v in enumerate(expected[-1000:]) if 1 + i % 3 == n) for n in (1, 2, 3)}
    await db.close()


async def test_an_sqlite_with_the_old_999_variable_limit_still_stores_big_batches(tmp_path):
    # SQLite before 3.32 binds at most 999 variables per statement: the writer's multi-row statements shrink.
    db = await open_db(tmp_path)
    await db.in_thread_transaction(lambda conn: conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999))
    writer = TelemetryWriter(db, SystemClock(), Metrics(), batch_size=10_000, flush_interval_s=10)
    rows = [row(float(i), 1000.0 + i, node_id=1 + i % 3) for i in range(700)]
    await writer.put_many(rows)
    await writer.flush()
    assert writer.last_commit_error is None
    assert [r[0] for r in await db.fetchall("SELECT value FROM telemetry_samples ORDER BY id")] == [float(i) for i in
                                                                                                    range(700)]
    await db.close()


@pytest.mark.parametrize("turns", range(5))
async def test_a_shutdown_cancellation_is_never_swallowed_when_a_batch_fills_at_that_moment(tmp_path, turns):
    # Python 3.11's wait_for returned normally when cancelled just as its event fired: the writer then ran on
    # and the gateway hung at SIGTERM under ingest load. The batch fills ``turns`` loop turns before the cancel.
    db = await open_db(tmp_path)
    writer = TelemetryWriter(db, SystemClock(), Metrics(), batch_size=2, flush_interval_s=30)
    task = asyncio.create_task(writer.run())
    await writer.submit([row(1.0, 1000.0)])
    for _ in range(3):
        await asyncio.sleep(0)  # the writer now lingers for a full batch
    await writer.submit([row(2.0, 1001.0)])  # a full batch: the linger ends
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait({task}, timeout=30)
    assert task.cancelled(), "the writer ignored its cancellation"
    await writer.flush()
    assert (await db.fetchone("SELECT COUNT(*) FROM telemetry_samples"))[0] == 2
    await db.close()
