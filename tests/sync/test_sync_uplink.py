"""Uplink against the reference receiver on real PostgreSQL: order, exactly-once, errors, backoff."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable

import pytest

from gateway.clock import ManualClock
from gateway.store.db import Database
from gateway.tools.seed_db import add_outbox, add_samples
from sync.client import Outcome, UpstreamClient
from sync.outbox import dead_letter_payload, list_dead_letters, load_cursor, read_batch
from sync.streams import OUTBOX_STREAMS, TELEMETRY_SPEC
from sync.uplink import Uplink, UplinkSettings
from tests.sync.synckit import RunningReceiver, drive, eventually, running, settle


async def _outbox_ids(db: Database, stream: str) -> list[int]:
    return [int(r[0]) for r in await db.fetchall("SELECT id FROM sync_outbox WHERE stream = ? ORDER BY id",
                                                 (stream,))]


async def test_every_row_of_every_stream_arrives_once_in_order(
    gw_db: Database, receiver: RunningReceiver, make_uplink: Callable[..., Uplink], clock: ManualClock
) -> None:
    add_samples(gw_db.path, 5000)
    add_outbox(gw_db.path, 40)
    uplink = make_uplink(telemetry_max_rows=700, max_rows=15)
    async with running(uplink, until_idle=True) as task:
        await drive(clock, task.done)
    task.result()

    assert await receiver.seqs("telemetry") == list(range(1, 5001))
    for stream in OUTBOX_STREAMS:
        assert await receiver.seqs(stream) == await _outbox_ids(gw_db, stream)
    # content, not just ids: the sample with seq 4242 is the SQLite row 4242 with uids resolved
    row = await gw_db.fetchone(
        "SELECT t.value, t.ts, t.metric_type, z.uid, n.uid FROM telemetry_samples t JOIN zones z ON z.id = t.zone_id"
        " JOIN nodes n ON n.id = t.node_id WHERE t.id = 4242")
    stored = (await receiver.items("telemetry"))[4241]
    assert row is not None
    assert (stored["value"], stored["ts"], stored["metric_type"], stored["zone_uid"], stored["node_uid"]) == tuple(row)
    alert = (await receiver.items("alerts"))[0]
    assert json.loads(alert["data"]) == {"kind": "alerts", "n": 0, "text": "alerts #0"}
    status = uplink.status()["streams"]
    assert status["telemetry"]["rows_sent"] == 5000
    assert status["telemetry"]["batches_sent"] == 8  # 7 x 700 + 100
    assert status["telemetry"]["backlog_rows"] == 0 and status["telemetry"]["catch_up_eta_s"] == 0.0
    assert (await load_cursor(gw_db, "telemetry")).last_seq == 5000
    assert (await load_cursor(gw_db, "alerts")).rows_sent == 40


async def test_a_repeated_idempotency_key_stores_nothing_twice(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient
) -> None:
    add_samples(gw_db.path, 150)
    gw = client.gateway_id
    gen = gw_db.generation
    small = await read_batch(gw_db, TELEMETRY_SPEC, gw, 0, generation=gen, max_rows=100, max_bytes=10**6)
    large = await read_batch(gw_db, TELEMETRY_SPEC, gw, 0, generation=gen, max_rows=150, max_bytes=10**6)
    assert small is not None and large is not None
    assert small.key == f"{gw}:{gen}:telemetry:1-100"

    first = await client.post_batch("telemetry", small.body, small.key)
    again = await client.post_batch("telemetry", small.body, small.key)
    overlapping = await client.post_batch("telemetry", large.body, large.key)  # another cut after a restart

    assert (first.outcome, first.status) == (Outcome.STORED, 201)
    assert (again.outcome, again.status) == (Outcome.DUPLICATE, 200)
    assert overlapping.outcome is Outcome.STORED and '"inserted":50' in overlapping.detail.replace(" ", "")
    assert await receiver.seqs("telemetry") == list(range(1, 151))


async def test_a_response_lost_after_commit_is_resent_and_deduplicated(
    gw_db: Database, receiver: RunningReceiver, make_uplink: Callable[..., Uplink], clock: ManualClock
) -> None:
    add_samples(gw_db.path, 1000)
    receiver.faults.update({"drop_after_commit_next": 2})
    uplink = make_uplink(telemetry_max_rows=400)
    async with running(uplink, until_idle=True) as task:
        await drive(clock, task.done, step=0.5)
    assert await receiver.seqs("telemetry") == list(range(1, 1001))
    # batch 1 committed, answer lost; its retry was a duplicate whose answer was lost too; third try seen
    assert receiver.stats["dropped_after_commit"] == 2
    assert receiver.stats["duplicate_batches"] == 2
    assert uplink.status()["streams"]["telemetry"]["duplicate_batches"] == 1


async def test_a_rejected_row_is_quarantined_alone_and_the_stream_moves_on(
    gw_db: Database, receiver: RunningReceiver, make_uplink: Callable[..., Uplink], clock: ManualClock
) -> None:
    add_samples(gw_db.path, 2000)
    add_outbox(gw_db.path, 5)
    receiver.faults.update({"reject_seqs": {"telemetry": [37, 1234]}})
    uplink = make_uplink(telemetry_max_rows=500, reject_attempts=2, backoff_cap_s=5)
    async with running(uplink, until_idle=True) as task:
        await drive(clock, task.done, step=1.0)
    task.result()

    assert await receiver.seqs("telemetry") == [s for s in range(1, 2001) if s not in (37, 1234)]
    assert await receiver.seqs("alerts") == await _outbox_ids(gw_db, "alerts")
    letters = await list_dead_letters(gw_db, "telemetry")
    assert [(d["first_seq"], d["last_seq"], d["count"], d["status_code"]) for d in letters] == [
        (1234, 1234, 1, 422), (37, 37, 1, 422)]
    assert "seq 37: rejected" in letters[1]["response"]
    assert letters[1]["attempts"] >= 2
    payload = await dead_letter_payload(gw_db, letters[1]["id"])
    assert payload is not None and [it["seq"] for it in payload["items"]] == [37]
    cursor = await load_cursor(gw_db, "telemetry")
    assert (cursor.last_seq, cursor.quarantined_rows) == (2000, 2)


async def test_retry_after_of_a_429_is_honoured(
    gw_db: Database, receiver: RunningReceiver, make_uplink: Callable[..., Uplink], clock: ManualClock
) -> None:
    add_samples(gw_db.path, 10)
    receiver.faults.update({"fail_next": 1, "fail_status": 429, "retry_after": "7"})
    uplink = make_uplink(backoff_base_s=0.5)
    telemetry = uplink.stream_status("telemetry")
    async with running(uplink):
        await eventually(lambda: telemetry.state == "backoff")
        delay = telemetry.last_delay_s
        assert delay is not None and 7.0 <= delay <= 7.0 * 1.5 and telemetry.last_status == 429  # + jitter
        for _ in range(13):  # 6.5 s of gateway time: nothing may be sent yet
            await clock.advance(0.5)
            await settle(0.005)
        assert receiver.stats["requests"] == 1
        await clock.advance(delay - 6.5 + 0.1)
        await eventually(lambda: telemetry.cursor == 10)
    assert receiver.stats["requests"] == 2


async def test_backoff_is_exponential_with_full_jitter_and_capped(
    gw_db: Database, receiver: RunningReceiver, make_uplink: Callable[..., Uplink], clock: ManualClock
) -> None:
    add_samples(gw_db.path, 10)
    receiver.faults.update({"fail_next": 9, "fail_status": 503})
    uplink = make_uplink(backoff_base_s=1.0, backoff_cap_s=10.0)
    telemetry = uplink.stream_status("telemetry")
    expected_rng = random.Random(7)  # make_uplink seeds the uplink's random source with 7
    expected = [expected_rng.uniform(0, min(10.0, 2.0**n)) for n in range(9)]
    seen: list[float] = []
    async with running(uplink):
        for attempt in range(1, 10):

            def waiting(a: int = attempt) -> bool:
                return telemetry.attempts == a and telemetry.next_attempt_at is not None

            await eventually(waiting)
            assert telemetry.last_delay_s is not None
            seen.append(telemetry.last_delay_s)
            await clock.advance(telemetry.last_delay_s + 0.001)
        await eventually(lambda: telemetry.cursor == 10)
    assert seen == expected
    assert all(d <= 10.0 for d in seen)  # failures 4.. draw from [0, 10], not [0, 16], [0, 32], ...
    assert telemetry.attempts == 0 and telemetry.last_error is None


async def test_a_refused_gateway_keeps_its_data_and_retries(
    gw_db: Database, receiver: RunningReceiver, clock: ManualClock
) -> None:
    add_samples(gw_db.path, 10)
    async with UpstreamClient(receiver.url, "wrong-token", receiver.gateway) as bad:
        uplink = Uplink(gw_db, bad, UplinkSettings(backoff_cap_s=60), clock=clock, rng=random.Random(1))
        telemetry = uplink.stream_status("telemetry")
        async with running(uplink):
            await drive(clock, lambda: telemetry.attempts >= 6, step=5.0)
            assert telemetry.state == "denied" and telemetry.last_status == 401
    assert await list_dead_letters(gw_db) == []
    assert (await load_cursor(gw_db, "telemetry")).last_seq == 0


async def test_a_stuck_stream_does_not_hold_back_the_others(
    gw_db: Database, receiver: RunningReceiver, make_uplink: Callable[..., Uplink], clock: ManualClock
) -> None:
    add_samples(gw_db.path, 100)
    add_outbox(gw_db.path, 20)
    receiver.faults.update({"reject_seqs": {"telemetry": [1]}})
    uplink = make_uplink(reject_attempts=1000)
    async with running(uplink):
        await drive(clock, lambda: all(uplink.stream_status(s).cursor > 0 and uplink.stream_status(s).state == "idle"
                                       for s in OUTBOX_STREAMS), step=1.0)
        assert uplink.stream_status("telemetry").cursor == 0
    for stream in OUTBOX_STREAMS:
        assert await receiver.seqs(stream) == await _outbox_ids(gw_db, stream)


async def test_byte_cap_and_413_make_batches_smaller_without_losing_rows(
    gw_db: Database, receiver: RunningReceiver, make_uplink: Callable[..., Uplink], clock: ManualClock
) -> None:
    add_samples(gw_db.path, 300)
    receiver.faults.update({"fail_next": 1, "fail_status": 413})
    uplink = make_uplink(telemetry_max_rows=200, max_bytes=20_000)  # ~80 samples of ~240 bytes
    async with running(uplink, until_idle=True) as task:
        await drive(clock, task.done)
    assert await receiver.seqs("telemetry") == list(range(1, 301))
    assert uplink.stream_status("telemetry").batches_sent >= 4


async def test_notify_wakes_an_idle_stream_at_once(
    gw_db: Database, receiver: RunningReceiver, make_uplink: Callable[..., Uplink], clock: ManualClock
) -> None:
    uplink = make_uplink(idle_poll_s=3600)
    alerts = uplink.stream_status("alerts")
    async with running(uplink):
        await eventually(lambda: alerts.state == "idle")
        # From a thread: another stream may be inside a write transaction that needs this loop to commit.
        await asyncio.to_thread(add_outbox, gw_db.path, 1)
        await settle(0.05)
        assert alerts.cursor == 0  # still asleep: no clock movement, no notify
        uplink.notify("alerts")
        await eventually(lambda: alerts.cursor > 0)  # the clock never moved
    assert len(await receiver.seqs("alerts")) == 1


async def test_status_reports_backlog_and_lag_before_catching_up(
    gw_db: Database, receiver: RunningReceiver, make_uplink: Callable[..., Uplink], clock: ManualClock
) -> None:
    add_samples(gw_db.path, 50, start_ts=clock.time() - 3600)
    uplink = make_uplink()
    receiver.faults.update({"fail_next": 1})
    async with running(uplink):
        telemetry = uplink.stream_status("telemetry")
        await eventually(lambda: telemetry.state == "backoff")
        snap = uplink.status()["streams"]["telemetry"]
        assert snap["backlog_rows"] == 50
        assert 3590 < snap["oldest_unsynced_age_s"] < 3610
        assert snap["attempts"] == 1 and "503" in snap["last_error"]
        assert snap["catch_up_eta_s"] is None  # nothing sent yet: no rate
        await drive(clock, lambda: telemetry.state == "idle", step=0.5)
    snap = uplink.status()["streams"]["telemetry"]
    assert snap["backlog_rows"] == 0 and snap["oldest_unsynced_age_s"] is None
    assert snap["last_success_at"] is not None and snap["attempts"] == 0


async def test_the_sqlite_json_fast_path_sends_the_same_items_as_the_generic_fetch(gw_db: Database) -> None:
    add_samples(gw_db.path, 300)
    await gw_db.execute("UPDATE telemetry_samples SET channel = 'ch1', raw = '{\"v\": 1}', clock_synced = 0"
                        " WHERE id = 7")
    await gw_db.execute("UPDATE telemetry_samples SET value = 9e999 WHERE id = 8")  # +inf slipped in
    assert TELEMETRY_SPEC.fetch_json is not None
    generic = await TELEMETRY_SPEC.fetch(gw_db, 0, 300)
    fast = await TELEMETRY_SPEC.fetch_json(gw_db, 0, 300)
    assert [s for s, _ in generic] == [s for s, _, _ in fast] == list(range(1, 301))
    for (_, item), (_, text, received_at) in zip(generic, fast, strict=True):
        decoded = json.loads(text)
        assert decoded.keys() == item.keys()
        for key, value in item.items():
            if isinstance(value, float):
                assert decoded[key] == pytest.approx(value, rel=1e-14)
            else:
                assert decoded[key] == value, key
        assert received_at == item["received_at"]
    assert json.loads(fast[6][1])["raw"] == '{"v": 1}' and json.loads(fast[6][1])["clock_synced"] is False
    assert json.loads(fast[7][1])["value"] is None and generic[7][1]["value"] is None
