"""Aggregation equals a brute-force recomputation (random and late samples), is idempotent, restarts, stays cheap."""

from __future__ import annotations

import random
import time as systime
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.automation.aggregate import Aggregator, contiguous_runs, local_day_bounds
from gateway.clock import ManualClock
from gateway.store.db import Database

BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")  # UTC+05:30: local days do not start on a UTC hour
METRICS = ("ph", "ec", "temp_water")

Row = tuple[int, int, str, float, float]  # zone_id, node_id, metric, value, ts


async def _db(tmp_path: Path) -> Database:
    db = Database(tmp_path / "gw.db")
    await db.open()
    return db


async def _insert(db: Database, rows: list[Row]) -> None:
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO telemetry_samples(zone_id, node_id, metric_type, value, ts, received_at, ts_source,"
            " clock_synced) VALUES (?,?,?,?,?,?, 'node', 1)",
            [(z, n, m, v, ts, ts) for z, n, m, v, ts in rows])


def _brute(rows: list[Row], tz: ZoneInfo) -> dict[str, dict[tuple[Any, ...], tuple[float, float, float, int]]]:
    groups: dict[str, dict[tuple[Any, ...], list[float]]] = {"1m": defaultdict(list), "1h": defaultdict(list),
                                                            "daily": defaultdict(list)}
    for z, n, m, v, ts in rows:
        minute = int(ts / 60) * 60
        groups["1m"][(minute, z, n, m)].append(v)
        groups["1h"][(minute - minute % 3600, z, n, m)].append(v)
        groups["daily"][(datetime.fromtimestamp(minute, tz).date().isoformat(), z, n, m)].append(v)
    return {level: {k: (min(vs), max(vs), sum(vs) / len(vs), len(vs)) for k, vs in g.items()}
            for level, g in groups.items()}


async def _tables(db: Database) -> dict[str, dict[tuple[Any, ...], tuple[float, float, float, int]]]:
    out = {}
    for level, table, key in (("1m", "telemetry_agg_1m", "bucket_start"), ("1h", "telemetry_agg_1h", "bucket_start"),
                              ("daily", "telemetry_daily", "date")):
        rows = await db.fetchall(f"SELECT {key}, zone_id, node_id, metric_type, min, max, avg, count FROM {table}")
        out[level] = {(r[0], r[1], r[2], r[3]): (r[4], r[5], r[6], r[7]) for r in rows}
    return out


def _assert_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    for level in want:
        assert set(got[level]) == set(want[level]), level
        for key, (mn, mx, avg, count) in want[level].items():
            g = got[level][key]
            assert (g[0], g[1], g[3]) == (mn, mx, count), (level, key)
            assert g[2] == pytest.approx(avg, rel=1e-9), (level, key)


def _samples(rng: random.Random, start: float, seconds: float, n: int) -> list[Row]:
    return [(rng.choice((1, 2)), rng.choice((10, 11, 12)), rng.choice(METRICS), round(rng.uniform(0, 10), 3),
             round(start + rng.uniform(0, seconds), 3)) for _ in range(n)]


@pytest.mark.parametrize(("tz", "start_hour"), [(BERLIN, 20), (KOLKATA, 14)], ids=["berlin", "kolkata"])
async def test_incremental_runs_with_late_samples_equal_brute_force(tmp_path: Path, tz: ZoneInfo,
                                                                     start_hour: int) -> None:
    rng = random.Random(7)
    db = await _db(tmp_path)
    # Ten hours across a local midnight: Berlin's spring-forward night (a 23-hour day), Kolkata's 18:30 UTC.
    t0 = datetime(2026, 3, 28, start_hour, 0, tzinfo=UTC).timestamp()
    clock = ManualClock(start_wall=t0)
    lateness = 900.0
    agg = Aggregator(db, clock, tz, lateness_s=lateness, chunk_rows=700)
    applied: list[Row] = []
    for batch in range(40):  # 40 runs, 15 min of data each, ten hours in all
        now = t0 + (batch + 1) * 900
        await clock.advance(now - clock.time())
        fresh = _samples(rng, now - 900, 900, 300)
        late = _samples(rng, now - 900 - lateness / 2, lateness / 2, 40)  # delayed, but within the lateness
        rows = fresh + late
        rng.shuffle(rows)
        await _insert(db, rows)
        applied += rows
        report = await agg.run_once()
        assert report.samples == len(rows) and report.late_dropped == 0
        if batch % 10 == 9:
            _assert_equal(await _tables(db), _brute(applied, tz))
    assert len({k[0] for k in (await _tables(db))["daily"]}) == 2
    before = await _tables(db)
    again = await agg.run_once()
    assert again.samples == 0 and await _tables(db) == before  # idempotent
    # A restart (new connection, new aggregator) carries on from the stored watermark.
    await db.close()
    db = await _db(tmp_path)
    agg = Aggregator(db, clock, tz, lateness_s=lateness, chunk_rows=700)
    extra = _samples(rng, clock.time() - 600, 600, 200)
    await _insert(db, extra)
    assert (await agg.run_once()).samples == 200
    _assert_equal(await _tables(db), _brute(applied + extra, tz))
    # Rebuilding from scratch gives the same tables.
    await db.execute("DELETE FROM aggregator_state")
    for table in ("telemetry_agg_1m", "telemetry_agg_1h", "telemetry_daily"):
        await db.execute(f"DELETE FROM {table}")
    await Aggregator(db, clock, tz, lateness_s=lateness).run_once()
    _assert_equal(await _tables(db), _brute(applied + extra, tz))
    await db.close()


async def test_samples_later_than_the_lateness_are_counted_not_applied(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    t0 = datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp()
    clock = ManualClock(start_wall=t0 + 7200)
    agg = Aggregator(db, clock, UTC, lateness_s=600)
    await _insert(db, [(1, 1, "ph", 6.0, t0 + 30), (1, 1, "ph", 6.2, t0 + 7000)])
    await agg.run_once()
    await _insert(db, [(1, 1, "ph", 9.9, t0 + 40), (1, 1, "ph", 5.0, t0 + 6700)])  # 2 h late / within 10 min
    report = await agg.run_once()
    assert report.late_dropped == 1 and report.samples == 2
    minute0 = await db.fetchone("SELECT max, count FROM telemetry_agg_1m WHERE bucket_start=?", (int(t0),))
    assert minute0 is not None and (minute0["max"], minute0["count"]) == (6.0, 1)  # the settled bucket kept
    state = await db.fetchone("SELECT * FROM aggregator_state WHERE name='telemetry'")
    assert state is not None and state["late_dropped"] == 1 and state["watermark_ts"] == t0 + 7000
    daily = await db.fetchone("SELECT min, max, count FROM telemetry_daily WHERE date='2026-06-01'")
    assert daily is not None and tuple(daily) == (5.0, 6.2, 3)
    await db.close()


async def test_future_timestamps_do_not_push_the_watermark_past_the_clock(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    clock = ManualClock(start_wall=datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp())
    agg = Aggregator(db, clock, UTC, lateness_s=600)
    await _insert(db, [(1, 1, "ph", 6.0, clock.time() + 86_400)])  # a node with a clock a day ahead
    await agg.run_once()
    await _insert(db, [(1, 1, "ph", 6.1, clock.time() - 300)])
    assert (await agg.run_once()).late_dropped == 0
    await db.close()


async def test_fifty_thousand_samples_a_minute_stay_cheap(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    t0 = datetime(2026, 6, 1, 0, tzinfo=UTC).timestamp()
    clock = ManualClock(start_wall=t0 + 3600)
    rng = random.Random(1)
    # An hour of history, then one minute at 50k samples/min from 500 series.
    await _insert(db, [(1 + i % 5, i % 100, METRICS[i % 3], rng.random(), t0 + i * 0.072) for i in range(50_000)])
    agg = Aggregator(db, clock, UTC, lateness_s=600)
    await agg.run_once()
    minute = [(1 + i % 5, i % 100, METRICS[i % 3], rng.random(), t0 + 3540 + i * 0.0012) for i in range(50_000)]
    await _insert(db, minute)
    started = systime.perf_counter()
    report = await agg.run_once()
    elapsed = systime.perf_counter() - started
    assert report.samples == 50_000 and report.minutes == 1 and report.hours == 1 and report.days == 1
    assert elapsed < 3.0, f"one minute of 50k samples took {elapsed:.2f}s"
    plan = await db.fetchall(
        "EXPLAIN QUERY PLAN SELECT value FROM telemetry_samples WHERE ts >= ? AND ts < ?", (0, 1))
    assert any("telemetry_samples_ts" in str(r["detail"]) for r in plan)
    await db.close()


async def test_prune_drops_old_minute_and_hour_rows_but_keeps_days(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    t0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    clock = ManualClock(start_wall=t0)
    agg = Aggregator(db, clock, UTC)
    await _insert(db, [(1, 1, "ph", 6.0, t0 + 60), (1, 1, "ph", 6.0, t0 + 20 * 86_400)])
    await clock.advance(20 * 86_400 + 120)
    await agg.run_once()
    assert await agg.prune(keep_1m_days=14, keep_1h_days=400) == 1
    counts = [(await db.fetchone(f"SELECT COUNT(*) AS c FROM {t}"))["c"]  # type: ignore[index]
              for t in ("telemetry_agg_1m", "telemetry_agg_1h", "telemetry_daily")]
    assert counts == [1, 2, 2]
    await db.close()


def test_helpers() -> None:
    assert contiguous_runs([180, 60, 120, 300, 420, 360], 60) == [(60, 180), (300, 420)]
    start, end = local_day_bounds(date(2026, 3, 29), BERLIN)
    assert end - start == 23 * 3600
    start, end = local_day_bounds(date(2026, 10, 25), BERLIN)
    assert end - start == 25 * 3600 and start % 3600 == 0
    assert local_day_bounds(date(2026, 1, 1), KOLKATA)[0] % 3600 == 1800
