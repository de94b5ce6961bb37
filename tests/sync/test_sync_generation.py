"""A sequence number is never used twice for different data: generations, content-checked idempotency and
rollback detection, against the reference receiver on real PostgreSQL."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.store.db import Database
from gateway.tools.seed_db import add_samples
from sync.client import Outcome, UpstreamClient, UpstreamError
from sync.generation import SequenceGuard, SideFile, capture_start, side_path
from sync.outbox import read_batch
from sync.streams import ALL_STREAMS, TELEMETRY_SPEC
from sync.uplink import Uplink, UplinkSettings
from tests.e2e.dbdamage import copy_database, replace_with
from tests.sync.synckit import TOKEN, RunningReceiver, drive, eventually, running

Row = tuple[int, float, float]  # seq, value, ts


async def _pg_rows(rx: RunningReceiver, generation: str) -> list[Row]:
    assert rx.pg is not None
    rows = await rx.pg.fetch("SELECT seq, value, ts FROM telemetry_samples WHERE gateway_id = $1 AND generation = $2"
                             " ORDER BY seq", rx.gateway, generation)
    return [(r["seq"], round(r["value"], 9), round(r["ts"], 5)) for r in rows]


async def _local_rows(db: Database, after: int = 0) -> list[Row]:
    rows = await db.fetchall("SELECT id, value, ts FROM telemetry_samples WHERE id > ? ORDER BY id", (after,))
    # Rounded as the wire does (SQLite's json_object prints 15 significant digits).
    return [(int(r[0]), round(float(r[1]), 9), round(float(r[2]), 5)) for r in rows]


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


async def _drain(uplink: Uplink, clock: ManualClock) -> None:
    async with running(uplink, until_idle=True) as task:
        await drive(clock, task.done, step=1.0, real_timeout=60)
    task.result()


async def test_a_reused_key_or_sequence_with_other_content_is_a_counted_409(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient
) -> None:
    add_samples(gw_db.path, 10)
    gw, gen = client.gateway_id, gw_db.generation
    first = await read_batch(gw_db, TELEMETRY_SPEC, gw, 0, generation=gen, max_rows=5, max_bytes=10**6)
    assert first is not None and first.key == f"{gw}:{gen}:telemetry:1-5"
    assert json.loads(gzip.decompress(first.body))["generation"] == gen
    assert (await client.post_batch("telemetry", first.body, first.key)).outcome is Outcome.STORED
    stored = await _pg_rows(receiver, gen)

    # What a rolled-back database does: the same sequence numbers now hold other samples.
    await gw_db.execute("UPDATE telemetry_samples SET value = value + 1 WHERE id <= 5")
    same_key = await read_batch(gw_db, TELEMETRY_SPEC, gw, 0, generation=gen, max_rows=5, max_bytes=10**6)
    assert same_key is not None and same_key.key == first.key and same_key.body != first.body
    refused = await client.post_batch("telemetry", same_key.body, same_key.key)
    assert (refused.outcome, refused.status) == (Outcome.CONFLICT, 409)
    assert "different body" in refused.detail
    other_cut = await read_batch(gw_db, TELEMETRY_SPEC, gw, 0, generation=gen, max_rows=8, max_bytes=10**6)
    assert other_cut is not None
    refused = await client.post_batch("telemetry", other_cut.body, other_cut.key)
    assert (refused.outcome, refused.status) == (Outcome.CONFLICT, 409)
    assert json.loads(refused.detail)["seqs"] == [1, 2, 3, 4, 5]
    assert await _pg_rows(receiver, gen) == stored  # nothing overwritten, nothing of 6-8 written
    assert receiver.stats["conflicts"] == 2

    # A retry cut differently with the same content is still fine (row-level idempotency).
    await gw_db.execute("UPDATE telemetry_samples SET value = value - 1 WHERE id <= 5")
    retry = await read_batch(gw_db, TELEMETRY_SPEC, gw, 0, generation=gen, max_rows=8, max_bytes=10**6)
    assert retry is not None
    ok = await client.post_batch("telemetry", retry.body, retry.key)
    assert ok.outcome is Outcome.STORED and json.loads(ok.detail)["inserted"] == 3
    assert await client.stream_marks(gen) == {s.name: (8 if s.name == "telemetry" else 0) for s in ALL_STREAMS}
    assert (await client.stream_marks("0123456789abcdef"))["telemetry"] == 0


async def test_a_409_is_never_a_success_the_uplink_alerts_and_resends_in_a_new_generation(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    add_samples(gw_db.path, 300)
    old = gw_db.generation
    batch = await read_batch(gw_db, TELEMETRY_SPEC, client.gateway_id, 0, generation=old, max_rows=100,
                             max_bytes=10**6)
    assert batch is not None
    assert (await client.post_batch("telemetry", batch.body, batch.key)).outcome is Outcome.STORED
    upstream_before = await _pg_rows(receiver, old)
    # The local rows 1-100 change under the same sequence numbers (the cursor never saw the send).
    await gw_db.execute("UPDATE telemetry_samples SET value = value + 7 WHERE id <= 100")
    conflicts: list[dict[str, Any]] = []

    async def on_conflict(details: dict[str, Any]) -> None:
        conflicts.append(details)

    uplink = Uplink(gw_db, client, UplinkSettings(telemetry_max_rows=100), clock=clock, rng=random.Random(2),
                    on_conflict=on_conflict)
    await _drain(uplink, clock)

    new = gw_db.generation
    assert new != old
    assert [(c["stream"], c["first_seq"], c["last_seq"], c["generation"], c["new_generation"])
            for c in conflicts] == [("telemetry", 1, 100, old, new)]
    assert uplink.conflicts == 1 and uplink.status()["generation"] == new
    assert await _pg_rows(receiver, old) == upstream_before  # the old data stays what it was
    assert await _pg_rows(receiver, new) == await _local_rows(gw_db)  # every local sample, once


async def _run_until(uplink: Uplink, clock: ManualClock, predicate: Any) -> None:
    async with running(uplink):
        await drive(clock, predicate, step=1.0, real_timeout=60)


async def test_a_database_replaced_by_an_older_copy_loses_no_sample_it_holds(
    tmp_path: Path, gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    path = gw_db.path
    side = SideFile(side_path(path))

    def uplink_for(db: Database, guard: SequenceGuard) -> Uplink:
        return Uplink(db, client, UplinkSettings(telemetry_max_rows=250, backlog_refresh_s=1), clock=clock,
                      rng=random.Random(4), guard=guard)

    add_samples(path, 1000, start_ts=1_800_000_000.0)
    await _drain(uplink_for(gw_db, SequenceGuard(gw_db, side, await capture_start(gw_db))), clock)
    old = gw_db.generation
    copy_database(path, tmp_path / "older.db")  # the backup, 1000 samples, all of them acknowledged
    add_samples(path, 500, start_ts=1_800_001_000.0)
    await _drain(uplink_for(gw_db, SequenceGuard(gw_db, side, await capture_start(gw_db))), clock)
    # 200 more arrive while upstream is down: acknowledged to the nodes, only in the local file.
    await receiver.stop()
    add_samples(path, 200, start_ts=1_800_002_000.0)
    await _run_until(uplink_for(gw_db, SequenceGuard(gw_db, side, await capture_start(gw_db))), clock,
                     lambda: (side.load() or {}).get("streams", {}).get("telemetry", {}).get("head") == 1700)
    assert side.load()["streams"]["telemetry"] == {"cursor": 1500, "head": 1700}  # type: ignore[index]
    await gw_db.close()

    replace_with(path, tmp_path / "older.db")
    db = Database(path)
    await db.open()
    try:
        start = await capture_start(db)
        assert (start.generation, start.heads["telemetry"], start.created) == (old, 1000, False)
        add_samples(path, 300, start_ts=1_800_003_000.0)  # new samples get seqs 1001-1300 again
        reports: list[dict[str, Any]] = []

        async def on_rollback(report: dict[str, Any]) -> None:
            reports.append(report)

        await receiver.start()
        uplink = uplink_for(db, SequenceGuard(db, side, start, on_rollback=on_rollback))
        await _drain(uplink, clock)

        new = db.generation
        assert new != old
        [report] = reports
        assert report["source"] == "side_file" and report["old_generation"] == old
        assert report["new_generation"] == new
        assert report["streams"]["telemetry"] == {"local_head": 1000, "acknowledged": 1500, "last_seen": 1700,
                                                  "cursor": 1000, "lost_seq": [1501, 1700]}
        # Every sample the restored file holds is upstream exactly once: 1-1000 from before (old
        # generation, untouched), 1001-1300 new (new generation); the older 1001-1500 stay as they were.
        local = await _local_rows(db)
        upstream_old, upstream_new = await _pg_rows(receiver, old), await _pg_rows(receiver, new)
        assert [r[0] for r in upstream_old] == list(range(1, 1501))
        assert upstream_old[:1000] == local[:1000]
        assert upstream_new == local[1000:] and [r[0] for r in upstream_new] == list(range(1001, 1301))
        # The 200 samples only the lost file had are a recorded gap, sent upstream as one.
        gaps = await db.fetchall("SELECT first_seq, last_seq, count, reason FROM sync_gaps")
        assert [tuple(g) for g in gaps] == [(1501, 1700, 200, "db_rolled_back")]
        events = [json.loads(item["data"]) for item in await receiver.items("zone_events")]
        assert [(e["type"], e["details"]["first_seq"], e["details"]["last_seq"], e["details"]["generation"])
                for e in events] == [("TELEMETRY_GAP", 1501, 1700, old)]
        assert side.load()["generation"] == new  # type: ignore[index]
    finally:
        await db.close()


async def test_without_the_side_file_upstream_alone_detects_the_rollback(
    tmp_path: Path, gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    path = gw_db.path
    add_samples(path, 400, start_ts=1_800_000_000.0)
    copy_database(path, tmp_path / "older.db")
    add_samples(path, 400, start_ts=1_800_001_000.0)
    await _drain(Uplink(gw_db, client, UplinkSettings(telemetry_max_rows=100), clock=clock,
                        rng=random.Random(5)), clock)
    old = gw_db.generation
    await gw_db.close()
    replace_with(path, tmp_path / "older.db")  # 400 samples, none sent from this copy: cursor 0
    db = Database(path)
    await db.open()
    try:
        start = await capture_start(db)
        reports: list[dict[str, Any]] = []

        async def on_rollback(report: dict[str, Any]) -> None:
            reports.append(report)

        guard = SequenceGuard(db, None, start, on_rollback=on_rollback)
        await asyncio.to_thread(add_samples, path, 50, start_ts=1_800_002_000.0)
        uplink = Uplink(db, client, UplinkSettings(telemetry_max_rows=100), clock=clock, rng=random.Random(6),
                        guard=guard)
        await _drain(uplink, clock)
        await eventually(lambda: bool(reports))
        assert reports[0]["source"] == "upstream"
        assert reports[0]["streams"]["telemetry"]["acknowledged"] == 800
        assert reports[0]["streams"]["telemetry"]["cursor"] == 400  # 1-400 are upstream already: not resent
        new = db.generation
        assert [r[0] for r in await _pg_rows(receiver, old)] == list(range(1, 801))
        assert await _pg_rows(receiver, new) == await _local_rows(db, after=400)
        assert len(await _pg_rows(receiver, new)) == 50
    finally:
        await db.close()


async def test_a_fresh_database_in_place_of_a_lost_one_records_what_the_old_one_never_sent(
    tmp_path: Path, gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    path = gw_db.path
    side = SideFile(side_path(path))
    add_samples(path, 600)
    await _drain(Uplink(gw_db, client, UplinkSettings(telemetry_max_rows=200), clock=clock, rng=random.Random(8),
                        guard=SequenceGuard(gw_db, side, await capture_start(gw_db))), clock)
    old = gw_db.generation
    add_samples(path, 150)  # committed, never sent
    await receiver.stop()
    uplink = Uplink(gw_db, client, UplinkSettings(backlog_refresh_s=1), clock=clock, rng=random.Random(9),
                    guard=SequenceGuard(gw_db, side, await capture_start(gw_db)))
    await _run_until(uplink, clock, lambda: (side.load() or {}).get("streams", {}).get("telemetry", {}) == {
        "cursor": 600, "head": 750})
    await gw_db.close()
    _remove(path)  # the file is gone (moved aside as corrupt, or deleted)

    db = Database(path)
    await db.open()
    try:
        assert db.created and db.generation != old
        await receiver.start()
        add_samples(path, 10)
        await _drain(Uplink(db, client, UplinkSettings(), clock=clock, rng=random.Random(10),
                            guard=SequenceGuard(db, side, await capture_start(db))), clock)
        gaps = [tuple(g) for g in await db.fetchall("SELECT stream, first_seq, last_seq, count, reason FROM sync_gaps")]
        assert gaps == [("telemetry", 601, 750, 150, "db_replaced")]
        events = [json.loads(item["data"]) for item in await receiver.items("zone_events")]
        assert [(e["details"]["first_seq"], e["details"]["last_seq"], e["details"]["generation"]) for e in events] \
            == [(601, 750, old)]
        assert [r[0] for r in await _pg_rows(receiver, db.generation)] == list(range(1, 11))
        assert [r[0] for r in await _pg_rows(receiver, old)] == list(range(1, 601))
    finally:
        await db.close()


async def test_the_marks_query_retries_a_busy_upstream_and_gives_up_on_one_that_refuses_it(
    receiver: RunningReceiver, client: UpstreamClient
) -> None:
    receiver.faults.update({"fail_rate": 1.0, "fail_status": 503})
    with pytest.raises(UpstreamError) as busy:  # asked again later: the start check waits for it
        await client.stream_marks("0123456789abcdef")
    assert busy.value.status == 503
    receiver.faults.update({"fail_rate": 0.0})
    async with UpstreamClient(receiver.url, TOKEN + "-wrong", client.gateway_id) as refused:
        assert await refused.stream_marks("0123456789abcdef") is None  # rely on the side file alone
