"""Bounded disk: age-based pruning of synced rows, the byte budget, last-resort gaps, a full disk."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
import pytest

from gateway.clock import ManualClock
from gateway.store.db import Database
from gateway.tools.seed_db import add_outbox, add_samples
from sync.client import UpstreamClient
from sync.outbox import list_dead_letters
from sync.retention import DiskLevel, Retention, RetentionSettings, list_gaps, used_bytes
from sync.uplink import Uplink, UplinkSettings
from tests.sync.synckit import RunningReceiver, drive, eventually, running

DAY = 86_400.0


class CountingDatabase(Database):
    """A Database that counts its write transactions (to see that deletes are chunked)."""

    transactions = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        self.transactions += 1
        async with super().transaction() as conn:
            yield conn


@pytest.fixture
async def counting_db(tmp_path: Path) -> AsyncIterator[CountingDatabase]:
    db = CountingDatabase(tmp_path / "gateway.sqlite")
    await db.open()
    yield db
    await db.close()


async def set_cursor(db: Database, stream: str, seq: int) -> None:
    await db.execute(
        "INSERT INTO sync_cursors (stream, last_seq, updated_at) VALUES (?, ?, 0)"
        " ON CONFLICT(stream) DO UPDATE SET last_seq = excluded.last_seq", (stream, seq))


async def ids(db: Database, sql: str, *params: object) -> list[int]:
    return [int(r[0]) for r in await db.fetchall(sql, params)]


async def test_only_synced_rows_older_than_retention_are_pruned_in_chunks(
    counting_db: CountingDatabase, clock: ManualClock
) -> None:
    db = counting_db
    now = clock.time()
    add_samples(db.path, 1000, start_ts=now - 40 * DAY, step_s=1)  # ids 1..1000: old
    add_samples(db.path, 500, start_ts=now - DAY, step_s=1)  # ids 1001..1500: recent
    await set_cursor(db, "telemetry", 1200)  # synced: 1..1200
    add_outbox(db.path, 10, created_at=now - 40 * DAY)  # ids 1..40, old
    add_outbox(db.path, 2, created_at=now)  # ids 41..48, recent
    await set_cursor(db, "alerts", 41)  # alerts 1, 5, 9, ... 41 synced; alerts of other streams are not
    before = db.transactions

    report = await Retention(db, RetentionSettings(retention_days=30, chunk_rows=100), clock=clock).run_once()

    assert report.pruned_samples == 1000 and report.error is None
    assert db.transactions - before >= 10  # 1000 rows in chunks of 100, each its own transaction
    assert await ids(db, "SELECT MIN(id) FROM telemetry_samples") == [1001]
    assert report.pruned_outbox == 10  # the old synced alerts only
    remaining_alerts = await ids(db, "SELECT id FROM sync_outbox WHERE stream = 'alerts' ORDER BY id")
    assert remaining_alerts == [41, 45]
    assert len(await ids(db, "SELECT id FROM sync_outbox WHERE stream = 'zone_events'")) == 12  # never synced


async def test_old_unsynced_rows_stay_and_the_newest_row_is_never_deleted(
    gw_db: Database, clock: ManualClock
) -> None:
    now = clock.time()
    add_samples(gw_db.path, 100, start_ts=now - 90 * DAY, step_s=1)
    await set_cursor(gw_db, "telemetry", 100)  # everything synced and old
    retention = Retention(gw_db, RetentionSettings(retention_days=30), clock=clock)
    await retention.run_once()
    # the newest row stays so that SQLite never hands out an id at or below the cursor again
    assert await ids(gw_db, "SELECT id FROM telemetry_samples") == [100]
    add_samples(gw_db.path, 1, start_ts=now)
    assert await ids(gw_db, "SELECT MAX(id) FROM telemetry_samples") == [101]

    await set_cursor(gw_db, "telemetry", 50)  # e.g. restored from a backup: 51..101 unsynced
    add_samples(gw_db.path, 10, start_ts=now - 90 * DAY)
    await retention.run_once()
    assert len(await ids(gw_db, "SELECT id FROM telemetry_samples")) == 12  # old but unsynced: kept


async def test_old_synced_samples_wait_for_the_local_aggregator(gw_db: Database, clock: ManualClock) -> None:
    now = clock.time()
    add_samples(gw_db.path, 100, start_ts=now - 40 * DAY, step_s=1)
    add_samples(gw_db.path, 1, start_ts=now)
    await set_cursor(gw_db, "telemetry", 101)  # all synced
    await gw_db.execute("INSERT INTO aggregator_state(name, last_id, updated_at) VALUES ('telemetry', 60, ?)",
                        (now,))
    retention = Retention(gw_db, RetentionSettings(retention_days=30), clock=clock)
    assert (await retention.run_once()).pruned_samples == 60  # 61..100 are not in the aggregates yet
    assert await ids(gw_db, "SELECT MIN(id) FROM telemetry_samples") == [61]
    await gw_db.execute("UPDATE aggregator_state SET last_id = 101 WHERE name = 'telemetry'")
    assert (await retention.run_once()).pruned_samples == 40
    assert await ids(gw_db, "SELECT id FROM telemetry_samples") == [101]


async def test_budget_hooks_fire_at_80_and_95_percent_and_on_recovery(gw_db: Database, clock: ManualClock) -> None:
    now = clock.time()
    add_samples(gw_db.path, 20_000, start_ts=now - 60 * DAY, step_s=1)
    used = await used_bytes(gw_db)
    levels: list[tuple[DiskLevel, int, int]] = []

    async def on_level(level: DiskLevel, used_now: int, budget: int) -> None:
        levels.append((level, used_now, budget))

    budget = int(used / 0.85)
    retention = Retention(gw_db, RetentionSettings(retention_days=30, budget_bytes=budget), clock=clock,
                          on_disk_level=on_level)
    await retention.run_once()  # nothing synced: nothing to prune
    await retention.run_once()
    assert [lv for lv, _, _ in levels] == [DiskLevel.HIGH]  # once, not on every pass
    assert levels[0][2] == budget

    add_samples(gw_db.path, 3000, start_ts=now - 50 * DAY, step_s=1)  # 85 % -> ~97 %
    await retention.run_once()
    assert levels[-1][0] is DiskLevel.CRITICAL and levels[-1][1] >= 0.95 * budget

    await set_cursor(gw_db, "telemetry", 15_000)  # synced and old: prunable
    report = await retention.run_once()
    assert report.pruned_samples == 15_000
    assert [lv for lv, _, _ in levels] == [DiskLevel.HIGH, DiskLevel.CRITICAL, DiskLevel.OK]
    assert retention.status()["level"] == "ok"


async def test_over_budget_drops_synced_rows_first_then_the_oldest_unsynced_with_a_gap_event(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    now = clock.time()
    add_samples(gw_db.path, 30_000, start_ts=now - 3600, step_s=0.1)  # all recent
    await set_cursor(gw_db, "telemetry", 5000)  # 1..5000 synced
    budget = int(await used_bytes(gw_db) * 0.6)
    settings = RetentionSettings(retention_days=30, budget_bytes=budget, chunk_rows=1000, drop_chunk_rows=2500)
    report = await Retention(gw_db, settings, clock=clock).run_once()

    assert report.pressure_samples == 5000  # the synced ones went first, whatever their age
    assert report.dropped_unsynced > 0 and report.used_bytes <= 0.9 * budget
    gaps = sorted(await list_gaps(gw_db), key=lambda g: g["first_seq"])
    assert gaps[0]["first_seq"] == 5001 and gaps[0]["reason"] == "disk_budget"
    for a, b in itertools.pairwise(gaps):
        assert b["first_seq"] == a["last_seq"] + 1  # contiguous, nothing dropped unrecorded
    dropped_to = gaps[-1]["last_seq"]
    assert sum(g["count"] for g in gaps) == dropped_to - 5000 == report.dropped_unsynced
    assert await ids(gw_db, "SELECT MIN(id) FROM telemetry_samples") == [dropped_to + 1]

    uplink = Uplink(gw_db, client, UplinkSettings(), clock=clock, rng=random.Random(1))
    async with running(uplink, until_idle=True) as task:
        await drive(clock, task.done)
    assert await receiver.seqs("telemetry") == list(range(dropped_to + 1, 30_001))
    events = [json.loads(it["data"]) for it in await receiver.items("zone_events")]
    assert [e["type"] for e in events] == ["TELEMETRY_GAP"] * len(gaps)
    assert events[0]["details"]["first_seq"] == 5001 and events[0]["zone_uid"] is None
    local = await gw_db.fetchall("SELECT id, type FROM zone_events ORDER BY id")  # shown on the local page too
    assert [(r[0], r[1]) for r in local] == [(e["event_id"], "TELEMETRY_GAP") for e in events]
    assert events[0]["details"]["first_ts"] == pytest.approx(now - 3600 + 5000 * 0.1)


async def test_a_full_database_is_reported_and_the_uplink_recovers_when_space_returns(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    add_samples(gw_db.path, 3000)
    page_count = (await gw_db.fetchone("PRAGMA page_count"))[0]  # type: ignore[index]
    await gw_db.execute(f"PRAGMA max_page_count = {page_count}")  # the "disk" is now full
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        await gw_db.execute("INSERT INTO sync_outbox (stream, body, created_at) VALUES ('alerts', ?, 0)",
                            ("x" * 20_000,))
    errors: list[str] = []

    async def on_storage_error(message: str) -> None:
        errors.append(message)

    # The receiver refuses the first batch; quarantining it needs room for the dead letter.
    receiver.faults.update({"reject_seqs": {"telemetry": [1]}})
    uplink = Uplink(gw_db, client, UplinkSettings(reject_attempts=1, bisect_rejected=False, backoff_cap_s=5),
                    clock=clock, rng=random.Random(2), on_storage_error=on_storage_error)
    telemetry = uplink.stream_status("telemetry")
    async with running(uplink) as task:
        await drive(clock, lambda: len(errors) >= 2, step=1.0)
        assert "database or disk is full" in errors[0] and not task.done()
        assert telemetry.cursor == 0 and "storage" in (telemetry.last_error or "")
        await gw_db.execute("PRAGMA max_page_count = 1073741823")  # space is back
        await drive(clock, lambda: telemetry.cursor == 3000, step=1.0)
    letters = await list_dead_letters(gw_db)
    assert [(d["first_seq"], d["last_seq"]) for d in letters] == [(1, 2000)]
    assert await receiver.seqs("telemetry") == list(range(2001, 3001))


async def test_retention_frees_room_in_a_full_database(gw_db: Database, clock: ManualClock) -> None:
    add_samples(gw_db.path, 20_000, start_ts=clock.time())
    page_count = (await gw_db.fetchone("PRAGMA page_count"))[0]  # type: ignore[index]
    await gw_db.execute(f"PRAGMA max_page_count = {page_count}")
    budget = int(await used_bytes(gw_db) * 0.7)
    report = await Retention(gw_db, RetentionSettings(budget_bytes=budget), clock=clock).run_once()
    assert report.error is None and report.dropped_unsynced > 0
    add_samples(gw_db.path, 2000, start_ts=clock.time())  # ingest can write again


async def test_a_locked_database_is_reported_and_the_next_pass_works(
    gw_db: Database, clock: ManualClock
) -> None:
    add_samples(gw_db.path, 100, start_ts=clock.time() - 40 * DAY)
    await set_cursor(gw_db, "telemetry", 100)
    await gw_db.execute("PRAGMA busy_timeout = 50")
    errors: list[str] = []

    async def on_error(message: str) -> None:
        errors.append(message)

    retention = Retention(gw_db, RetentionSettings(retention_days=30), clock=clock, on_storage_error=on_error)
    other = sqlite3.connect(gw_db.path)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        report = await retention.run_once()
    finally:
        other.rollback()
        other.close()
    assert report.error is not None and "locked" in report.error and errors == [report.error]
    assert retention.status()["last_pass"]["error"] == report.error
    assert (await retention.run_once()).pruned_samples == 99


async def test_kick_runs_a_pass_without_waiting_for_the_interval(gw_db: Database, clock: ManualClock) -> None:
    retention = Retention(gw_db, RetentionSettings(interval_s=3600), clock=clock)
    async with running(retention):
        await eventually(lambda: retention.last_report is not None)
        first = retention.last_report
        await asyncio.to_thread(add_samples, gw_db.path, 10, start_ts=clock.time() - 40 * DAY)
        await set_cursor(gw_db, "telemetry", 10)
        retention.kick()
        await eventually(lambda: retention.last_report is not first)
    assert retention.last_report is not None and retention.last_report.pruned_samples == 9
