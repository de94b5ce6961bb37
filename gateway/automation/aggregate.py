"""Telemetry aggregation (seed 003 §17): ``telemetry_samples`` → ``telemetry_agg_1m`` → ``_1h`` → ``telemetry_daily``.

Incremental by sample id: each run takes the samples inserted since ``aggregator_state.last_id`` (in
id chunks), finds the 1-minute buckets they touch and recomputes exactly those buckets from the
samples (DELETE + INSERT … SELECT in one transaction), then the hours and local days containing them
from the finer level. Recomputing instead of adding makes it idempotent (a second run changes
nothing) and exact for late samples and after a crash (the watermark moves in the same transaction).

Late samples are applied while their minute is younger than ``watermark - lateness`` (watermark = the
newest sample time seen, never ahead of the wall clock); older ones are counted in ``late_dropped``
and leave settled buckets alone, because by then retention may have pruned their neighbours.

Cost: the new-id scan walks the rowid range; recomputes use the ``ts`` index; an hour is rebuilt from
≤ 60 minute rows per series and a day from ≤ 25 hour rows (from minutes only where the local day does
not start on a UTC hour, e.g. UTC+05:30).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from gateway.clock import Clock
from gateway.store import aggregates
from gateway.store.db import Database

log = logging.getLogger(__name__)

NAME = "telemetry"


def contiguous_runs(values: Iterable[int], step: int) -> list[tuple[int, int]]:
    """Group sorted, step-aligned values into (first, last) runs of consecutive steps."""
    runs: list[tuple[int, int]] = []
    for v in sorted(set(values)):
        if runs and v == runs[-1][1] + step:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def local_day_bounds(d: date, tz: tzinfo) -> tuple[int, int]:
    """UTC seconds [start, end) of local date ``d`` (23 or 25 h long on DST days)."""

    def midnight(day: date) -> int:
        aware = datetime.combine(day, time(0)).replace(tzinfo=tz)
        return int(aware.astimezone(UTC).timestamp())

    return midnight(d), midnight(d + timedelta(days=1))


def local_date(ts: float, tz: tzinfo) -> date:
    """The greenhouse-local date of a UTC timestamp."""
    return datetime.fromtimestamp(ts, tz).date()


@dataclass(frozen=True)
class RunReport:
    """What one ``run_once`` did."""

    samples: int
    minutes: int
    hours: int
    days: int
    late_dropped: int
    last_id: int


class Aggregator:
    """Keeps the aggregate tables up to date with ``telemetry_samples``."""

    def __init__(self, db: Database, clock: Clock, tz: tzinfo, *, lateness_s: float = 600.0,
                 chunk_rows: int = 50_000) -> None:
        self._db = db
        self._clock = clock
        self._tz = tz
        self._lateness = lateness_s
        self._chunk = chunk_rows

    async def run_once(self) -> RunReport:
        """Aggregate everything inserted since the last run."""
        max_id = await aggregates.max_sample_id(self._db)
        totals = [0, 0, 0, 0, 0]
        last_id = await self._last_id()
        while last_id < max_id:
            hi = min(last_id + self._chunk, max_id)
            counts = await self._chunk_once(last_id, hi)
            totals = [a + b for a, b in zip(totals, counts, strict=True)]
            last_id = hi
            await asyncio.sleep(0)  # let the telemetry writer in between chunks
        return RunReport(totals[0], totals[1], totals[2], totals[3], totals[4], last_id)

    async def _last_id(self) -> int:
        return await aggregates.last_id(self._db, NAME)

    async def _chunk_once(self, lo: int, hi: int) -> tuple[int, int, int, int, int]:
        async with self._db.transaction() as conn:
            watermark = await aggregates.watermark(conn, NAME)
            buckets = await aggregates.new_minutes(conn, lo, hi)
            cutoff = -math.inf if watermark is None else watermark - self._lateness
            minutes = sorted(b for b, _, _ in buckets if b + 60 > cutoff)
            late = sum(n for b, n, _ in buckets if b + 60 <= cutoff)
            samples = sum(n for _, n, _ in buckets)
            newest = max((t for _, _, t in buckets), default=-math.inf)
            watermark = max(watermark if watermark is not None else -math.inf, min(newest, self._clock.time()))
            for first, last in contiguous_runs(minutes, 60):
                await aggregates.rebuild_minutes(conn, first, last)
            hours = sorted({b - b % 3600 for b in minutes})
            for first, last in contiguous_runs(hours, 3600):
                await aggregates.rebuild_hours(conn, first, last)
            days = sorted({local_date(b, self._tz) for b in minutes})
            for d in days:
                start, end = local_day_bounds(d, self._tz)
                # A local day that starts and ends on UTC hours is built from hours, others from minutes.
                source = aggregates.HOUR_TABLE if start % 3600 == 0 and end % 3600 == 0 else aggregates.MINUTE_TABLE
                await aggregates.rebuild_day(conn, d, start, end, source)
            await aggregates.save_telemetry_progress(
                conn, NAME, hi, watermark if math.isfinite(watermark) else None, max(minutes, default=None),
                max(hours, default=None), days[-1].isoformat() if days else None, late, self._clock.time())
        if late:
            log.warning("aggregation: %d sample(s) arrived later than %.0f s and were not aggregated", late,
                        self._lateness)
        return samples, len(minutes), len(hours), len(days), late

    async def prune(self, keep_1m_days: float = 14.0, keep_1h_days: float = 400.0) -> int:
        """Drop old minute and hour aggregates (daily ones stay); returns rows deleted."""
        now = self._clock.time()
        deleted = 0
        for table, days in ((aggregates.MINUTE_TABLE, keep_1m_days), (aggregates.HOUR_TABLE, keep_1h_days)):
            deleted += await aggregates.prune(self._db, table, now - days * 86_400)
        return deleted

