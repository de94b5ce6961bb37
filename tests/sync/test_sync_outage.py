"""Offline is normal: a long outage, then a flaky upstream; in the end every row is stored exactly once."""

from __future__ import annotations

import dataclasses
import random

from gateway.clock import ManualClock
from gateway.store.db import Database
from gateway.tools.seed_db import add_outbox, add_samples
from sync.client import UpstreamClient
from sync.reachability import Reachability
from sync.streams import ALL_STREAMS, EncodedRow, StreamSpec
from sync.uplink import Uplink, UplinkSettings
from tests.sync.synckit import RunningReceiver, drive, eventually, running

DAY = 86_400.0


async def _max_id(db: Database, table: str, stream: str | None = None) -> int:
    if stream is None:
        row = await db.fetchone(f"SELECT MAX(id) FROM {table}")
    else:
        row = await db.fetchone(f"SELECT MAX(id) FROM {table} WHERE stream = ?", (stream,))
    return int(row[0]) if row and row[0] is not None else 0


async def test_three_days_offline_then_back_loses_nothing_and_alerts_once(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    add_samples(gw_db.path, 3000, start_ts=clock.time())
    add_outbox(gw_db.path, 10)
    events: list[tuple[str, float, float]] = []

    async def unreachable(since: float) -> None:
        events.append(("down", since, clock.time()))

    async def reachable() -> None:
        events.append(("up", 0.0, clock.time()))

    reach = Reachability(unreachable_after_s=600, clock=clock, on_unreachable=unreachable, on_reachable=reachable)
    uplink = Uplink(gw_db, client, UplinkSettings(telemetry_max_rows=500, backoff_cap_s=300), clock=clock,
                    rng=random.Random(3), reachability=reach)
    await receiver.stop()
    started = clock.time()
    async with running(uplink):
        telemetry = uplink.stream_status("telemetry")
        await eventually(lambda: telemetry.attempts == 1)  # first refusal at the start time
        await drive(clock, lambda: clock.time() - started >= 3 * DAY, step=300)
        # The last clock step may have started another (refused) attempt: let it end in backoff again.
        await eventually(lambda: telemetry.state == "backoff")
        assert telemetry.cursor == 0 and telemetry.backlog_rows == 3000
        assert telemetry.last_status is None
        assert "Connect" in (telemetry.last_error or "")
        assert len(events) == 1
        kind, since, fired_at = events[0]
        assert kind == "down" and since == started and 600 <= fired_at - started <= 900
        assert uplink.status()["upstream"]["unreachable"] is True

        await receiver.start()  # same port
        expected = {s.name: await _max_id(gw_db, "sync_outbox", s.name) for s in ALL_STREAMS[1:]}
        expected["telemetry"] = 3000
        await drive(clock, lambda: all(uplink.stream_status(n).cursor == v for n, v in expected.items()), step=30)

    assert [e[0] for e in events] == ["down", "up"]
    assert await receiver.seqs("telemetry") == list(range(1, 3001))
    for name, last in expected.items():
        assert (await receiver.seqs(name))[-1:] == [last]


def _spy(spec: StreamSpec, limits: list[int], in_flight: list[int], peak: list[int]) -> StreamSpec:
    """Wrap a stream to record how much it is asked to read and how many reads overlap."""
    assert spec.fetch_json is not None
    inner = spec.fetch_json

    async def fetch_json(db: Database, after: int, limit: int) -> list[EncodedRow]:
        limits.append(limit)
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        try:
            return await inner(db, after, limit)
        finally:
            in_flight[0] -= 1

    return dataclasses.replace(spec, fetch_json=fetch_json)


async def test_flaky_upstream_ends_with_every_row_exactly_once(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    add_samples(gw_db.path, 4000)
    add_outbox(gw_db.path, 30)
    receiver.faults.update({
        "fail_rate": 0.2, "reset_rate": 0.1, "drop_after_commit_rate": 0.25,
        "slow_ms": 1, "slow_jitter_ms": 4,
    })
    limits: list[int] = []
    in_flight, peak = [0], [0]
    streams = (_spy(ALL_STREAMS[0], limits, in_flight, peak), *ALL_STREAMS[1:])
    uplink = Uplink(gw_db, client, UplinkSettings(telemetry_max_rows=250, max_rows=7, backoff_base_s=0.1,
                                                  backoff_cap_s=2), streams=streams, clock=clock,
                    rng=random.Random(5))
    async with running(uplink, until_idle=True) as task:
        await drive(clock, task.done, step=0.25, real_timeout=60)
    task.result()

    assert await receiver.seqs("telemetry") == list(range(1, 4001))
    for spec in ALL_STREAMS[1:]:
        rows = await gw_db.fetchall("SELECT id FROM sync_outbox WHERE stream = ? ORDER BY id", (spec.name,))
        assert await receiver.seqs(spec.name) == [r[0] for r in rows]
    stats = receiver.stats
    assert stats["resets"] > 0 and stats["dropped_after_commit"] > 0 and stats["status_503"] > 0
    assert stats["duplicate_batches"] > 0  # lost answers were resent and recognised
    # bounded memory: never asked for more than one batch, at most one read-ahead at a time
    assert max(limits) == 250 and peak[0] == 1
