"""The receiver at fleet scale: bounded concurrency with 429 + Retry-After, the batch size hint, and the
monthly-partitioned telemetry table keeping every sample exactly once (real HTTP, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from gateway.clock import ManualClock
from gateway.store.db import Database
from gateway.tools.seed_db import add_samples
from sync.client import UpstreamClient
from sync.receiver.admission import Admission, AdmissionLimits
from sync.receiver.app import STATE
from sync.receiver.schema import month_bounds
from sync.uplink import Uplink, UplinkSettings
from tests.fakes.postgres import PostgresCluster
from tests.sync.synckit import TOKEN, RunningReceiver, eventually, running

JAN = month_bounds((2026, 1))[0]
MAR = month_bounds((2026, 3))[0]


def telemetry_body(gateway: str, seqs: list[int], *, ts: Callable[[int], float] = lambda s: JAN + s,
                   generation: str = "g1", value: float = 1.0) -> tuple[bytes, str]:
    """A valid gzip telemetry batch and its Idempotency-Key."""
    items = [{"seq": s, "zone_uid": "zone-1", "node_uid": "node-1", "metric_type": "ph", "channel": None,
              "value": value + s, "ts": ts(s), "received_at": ts(s), "ts_source": "node", "clock_synced": True,
              "raw": None} for s in seqs]
    doc = {"gateway_id": gateway, "generation": generation, "stream": "telemetry", "count": len(items),
           "first_seq": seqs[0], "last_seq": seqs[-1], "items": items}
    return gzip.compress(json.dumps(doc).encode()), f"{gateway}:{generation}:telemetry:{seqs[0]}-{seqs[-1]}"


async def post(session: aiohttp.ClientSession, rx: RunningReceiver, gateway: str, seqs: list[int],
               **kw: Any) -> tuple[int, dict[str, str]]:
    """POST one telemetry batch; returns (status, headers)."""
    body, key = telemetry_body(gateway, seqs, **kw)
    async with session.post(f"{rx.url}/v1/gateways/{gateway}/streams/telemetry/batches", data=body, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip", "Content-Type": "application/json",
            "Idempotency-Key": key}) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


async def stats(rx: RunningReceiver) -> dict[str, Any]:
    """The receiver's /admin/stats."""
    doc: dict[str, Any] = await rx.admin("GET", "/admin/stats")
    return doc


@pytest.fixture
async def limited(fresh_postgres_dsn: str) -> AsyncIterator[RunningReceiver]:
    """A receiver admitting 4 batches at once, 2 per gateway, on a database of its own."""
    rx = RunningReceiver(fresh_postgres_dsn, limits=AdmissionLimits(max_batches=4, max_batches_per_gateway=2))
    await rx.start()
    yield rx
    await rx.close()


async def test_batches_beyond_the_limits_are_refused_at_once_with_retry_after(limited: RunningReceiver) -> None:
    rx = limited
    await rx.admin("PUT", "/admin/faults", {"hold_batches": True})
    async with aiohttp.ClientSession() as s:
        held = [asyncio.create_task(post(s, rx, "gw-a", [1, 2])), asyncio.create_task(post(s, rx, "gw-a", [3, 4]))]
        await eventually(lambda: _in_flight(rx) == 2)
        refused = [await post(s, rx, "gw-a", [5 + i]) for i in range(3)]  # gw-a holds its 2 slots
        assert [st for st, _ in refused] == [429, 429, 429]
        assert all(1 <= int(h["Retry-After"]) <= 3 for _, h in refused)
        held += [asyncio.create_task(post(s, rx, gw, [1])) for gw in ("gw-b", "gw-c")]
        await eventually(lambda: _in_flight(rx) == 4)
        status, headers = await post(s, rx, "gw-d", [1])  # the process is full, whatever the gateway
        assert status == 429 and "Retry-After" in headers
        assert not any(t.done() for t in held)  # nothing was answered, nothing queued beyond the limits
        await rx.admin("PUT", "/admin/faults", {"hold_batches": False})
        assert sorted(st for st, _ in await asyncio.gather(*held)) == [201, 201, 201, 201]
    counters = await stats(rx)
    assert (counters["refused_gateway"], counters["refused_process"], counters["status_429"]) == (3, 1, 4)
    assert (counters["in_flight"], counters["peak_in_flight"]) == (0, 4)
    assert await rx.seqs("telemetry", "gw-a") == [1, 2, 3, 4]  # the refused ones were not stored


def _in_flight(rx: RunningReceiver) -> int:
    assert rx.app is not None
    return rx.app[STATE].admission.in_flight


async def test_the_uplink_waits_the_retry_after_of_a_real_429_plus_jitter(
    gw_db: Database, receiver: RunningReceiver, make_uplink: Callable[..., Uplink], clock: ManualClock,
    gateway_id: str,
) -> None:
    add_samples(gw_db.path, 50)
    await receiver.admin("PUT", "/admin/faults", {"hold_batches": True})
    async with aiohttp.ClientSession() as s:
        # Another generation of the same gateway holds both of its slots (a retry stuck on a slow server).
        held = [asyncio.create_task(post(s, receiver, gateway_id, [i], generation="old")) for i in (1, 2)]
        await eventually(lambda: _in_flight(receiver) == 2)
        uplink = make_uplink(backoff_base_s=0.5)
        telemetry = uplink.stream_status("telemetry")
        async with running(uplink):
            await eventually(lambda: telemetry.last_status == 429)
            delay = telemetry.last_delay_s
            assert delay is not None and 1.0 <= delay <= 3.0 * 1.5  # Retry-After 1-3 s, then up to +50 %
            await receiver.admin("PUT", "/admin/faults", {"hold_batches": False})
            await asyncio.gather(*held)
            await clock.advance(delay * 0.9)
            await asyncio.sleep(0.05)
            assert telemetry.cursor == 0  # still waiting: the Retry-After is honoured
            await clock.advance(delay * 0.1 + 0.01)
            await eventually(lambda: telemetry.cursor == 50)
    assert (await stats(receiver))["refused_gateway"] == 1
    assert await receiver.seqs("telemetry") == sorted([1, 2, *range(1, 51)])  # "old" 1-2, then the uplink's


async def test_many_429s_do_not_grow_the_backoff_of_the_next_plain_failure(
    gw_db: Database, receiver: RunningReceiver, make_uplink: Callable[..., Uplink], clock: ManualClock,
) -> None:
    add_samples(gw_db.path, 20)
    receiver.faults.update({"fail_next": 8, "fail_status": 429, "retry_after": "2"})
    uplink = make_uplink(backoff_base_s=1.0, backoff_cap_s=300.0)
    telemetry = uplink.stream_status("telemetry")
    delays: list[float] = []
    async with running(uplink):
        for n in range(1, 9):

            def waiting(n: int = n) -> bool:
                return receiver.stats.get("requests") == n and telemetry.next_attempt_at is not None

            await eventually(waiting)
            assert telemetry.last_status == 429 and telemetry.last_delay_s is not None
            delays.append(telemetry.last_delay_s)
            if n == 8:  # then a failure without Retry-After (a 503 from a proxy)
                receiver.faults.update({"fail_next": 1, "fail_status": 503, "retry_after": None})
            await clock.advance(telemetry.last_delay_s + 0.001)
        await eventually(lambda: receiver.stats.get("requests") == 9 and telemetry.last_status == 503
                         and telemetry.next_attempt_at is not None)
        assert all(2.0 <= d <= 3.0 for d in delays)  # the Retry-After, plus up to 50 % jitter
        plain = telemetry.last_delay_s
        assert plain is not None and plain <= 1.0  # first plain failure: uniform(0, base), not 2**8 s
        await clock.advance(plain + 0.001)
        await eventually(lambda: telemetry.cursor == 20)


async def test_a_slow_server_negotiates_the_uplinks_batches_down(
    gw_db: Database, fresh_postgres_dsn: str, gateway_id: str, clock: ManualClock,
) -> None:
    # Each batch takes >= 100 ms (a slow database) against a 50 ms target: the hint halves the batch at least.
    rx = RunningReceiver(fresh_postgres_dsn, gateway_id, limits=AdmissionLimits(target_batch_s=0.05))
    await rx.start()
    try:
        rx.faults.update({"store_delay_ms": 100})
        add_samples(gw_db.path, 3000)
        async with UpstreamClient(rx.url, TOKEN, gateway_id, timeout_s=10) as client:
            uplink = Uplink(gw_db, client, UplinkSettings(telemetry_max_rows=1000), clock=clock)
            telemetry = uplink.stream_status("telemetry")
            async with running(uplink):
                await eventually(lambda: telemetry.cursor == 3000, timeout=60)
        assert rx.pg is not None
        sizes = [r["count"] for r in await rx.pg.fetch(
            "SELECT count FROM idempotency_keys WHERE gateway_id = $1 ORDER BY first_seq", gateway_id)]
        assert sizes[0] == 1000 and len(sizes) >= 5 and max(sizes[1:]) <= 500
        assert sum(sizes) == 3000 and await rx.seqs("telemetry") == list(range(1, 3001))
        assert telemetry.batch_limit <= 500
    finally:
        await rx.close()


def test_the_hint_shrinks_when_slow_and_grows_back_when_fast() -> None:
    adm = Admission(AdmissionLimits(target_batch_s=1.0, min_hint_rows=100, max_hint_rows=2000))
    adm.observe(2000, 0.5)
    assert adm.headers() == {}  # fast enough: no hint
    adm.observe(2000, 4.0)
    assert adm.hint_rows == 500 and adm.headers() == {"X-Max-Batch-Rows": "500"}
    adm.observe(500, 100.0)
    assert adm.hint_rows == 100  # never below the floor
    for _ in range(20):
        adm.observe(adm.hint_rows or 0, 0.1)
    assert adm.hint_rows is None  # grown back past the ceiling: no limit asked for


async def _placement(pool: asyncpg.Pool, gateway: str) -> dict[str, int]:
    rows = await pool.fetch("SELECT tableoid::regclass::text AS part, count(*) AS n FROM telemetry_samples"
                            " WHERE gateway_id = $1 GROUP BY 1", gateway)
    return {r["part"]: r["n"] for r in rows}


async def test_samples_land_in_their_months_partition_and_odd_clocks_in_the_default(limited: RunningReceiver) -> None:
    rx = limited
    assert rx.pg is not None
    async with aiohttp.ClientSession() as s:
        assert (await post(s, rx, "gw-p", [1, 2], ts=lambda q: JAN + q))[0] == 201
        assert (await post(s, rx, "gw-p", [3, 4], ts=lambda q: MAR + q))[0] == 201
        assert (await post(s, rx, "gw-p", [5], ts=lambda q: 12.0))[0] == 201  # a node clock at 1970
    assert await _placement(rx.pg, "gw-p") == {"telemetry_samples_y2026m01": 2, "telemetry_samples_y2026m03": 2,
                                               "telemetry_samples_default": 1}
    plan = "\n".join(r[0] for r in await rx.pg.fetch(
        "EXPLAIN SELECT value FROM telemetry_samples WHERE gateway_id = 'gw-p' AND zone_uid = 'zone-1'"
        f" AND metric_type = 'ph' AND ts >= {MAR} AND ts < {MAR + 86400}"))
    assert "y2026m03" in plan and "y2026m01" not in plan and "default" not in plan  # pruned to its month


async def test_overlapping_retries_are_stored_once_across_partitions_and_receivers(limited: RunningReceiver) -> None:
    other = RunningReceiver(limited.dsn)  # a second receiver (own pool) on the same database
    await other.start()
    try:
        month = 31 * 86400 / 20  # seqs 1..40 span two months
        ts: Callable[[int], float] = lambda q: JAN + q * month  # noqa: E731
        async with aiohttp.ClientSession() as s:
            assert (await post(s, limited, "gw-o", list(range(1, 21)), ts=ts))[0] == 201
            # Retries cut differently, and the same batch on both receivers at once.
            answers = await asyncio.gather(
                post(s, limited, "gw-o", list(range(10, 31)), ts=ts),
                post(s, other, "gw-o", list(range(10, 31)), ts=ts),
                post(s, other, "gw-o", list(range(15, 41)), ts=ts),
                post(s, limited, "gw-o", list(range(1, 41)), ts=ts))
            assert {st for st, _ in answers} <= {200, 201}
            assert (await post(s, other, "gw-o", [3, 4], ts=ts, value=99.0))[0] == 409  # seq reused, other data
        assert limited.pg is not None
        assert await limited.seqs("telemetry", "gw-o") == list(range(1, 41))
        assert len(await _placement(limited.pg, "gw-o")) >= 2
        ranges = await limited.pg.fetch("SELECT first_seq, last_seq FROM telemetry_seq_ranges"
                                        " WHERE gateway_id = 'gw-o' ORDER BY first_seq")
        covered = [s for r in ranges for s in range(r["first_seq"], r["last_seq"] + 1)]
        assert covered == list(range(1, 41))
    finally:
        await other.close()


async def test_an_unpartitioned_table_of_an_older_receiver_is_migrated(postgres_cluster: PostgresCluster) -> None:
    dsn = postgres_cluster.create_database("legacy_rx")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE telemetry_samples (gateway_id text NOT NULL, generation text NOT NULL DEFAULT '',"
            " seq bigint NOT NULL, zone_uid text, node_uid text, metric_type text NOT NULL, channel text,"
            " value double precision NOT NULL, ts double precision NOT NULL, received_at double precision,"
            " ts_source text, clock_synced boolean, raw text, stored_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (gateway_id, generation, seq))")
        await conn.execute(
            "INSERT INTO telemetry_samples (gateway_id, generation, seq, metric_type, value, ts, zone_uid, node_uid,"
            " received_at, ts_source, clock_synced) SELECT 'gw-l', 'g1', s, 'ph', 1.0 + s, $1 + s, 'zone-1',"
            " 'node-1', $1 + s, 'node', true FROM generate_series(1, 10) s WHERE s <> 6", JAN)
    finally:
        await conn.close()
    rx = RunningReceiver(dsn)
    await rx.start()
    try:
        assert rx.pg is not None
        assert await _placement(rx.pg, "gw-l") == {"telemetry_samples_y2026m01": 9}
        ranges = [(r[0], r[1]) for r in await rx.pg.fetch(
            "SELECT first_seq, last_seq FROM telemetry_seq_ranges ORDER BY 1")]
        assert ranges == [(1, 5), (7, 10)]
        async with aiohttp.ClientSession() as s:
            assert (await post(s, rx, "gw-l", list(range(1, 12))))[0] == 201  # only 6 and 11 are new
        assert await rx.seqs("telemetry", "gw-l") == list(range(1, 12))
    finally:
        await rx.close()
