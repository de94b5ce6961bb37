"""The telemetry aggregate tables (``telemetry_agg_1m``, ``telemetry_agg_1h``, ``telemetry_daily``), the
incremental jobs' progress (``aggregator_state``) and the chart queries that read them.

Buckets are recomputed from the finer level (DELETE + INSERT … SELECT) inside the caller's transaction, so a
second run changes nothing and the job's progress moves in the same commit.
"""

from __future__ import annotations

from datetime import date
from typing import NamedTuple

import aiosqlite

from gateway.store.db import Database

MINUTE_TABLE = "telemetry_agg_1m"
HOUR_TABLE = "telemetry_agg_1h"
_BUCKET_TABLES = (MINUTE_TABLE, HOUR_TABLE)
_MINUTE_EXPR = "CAST(ts / 60 AS INTEGER) * 60"


class MinuteCount(NamedTuple):
    """How many new samples fall in one UTC minute, and the newest sample time among them."""

    bucket_start: int
    samples: int
    newest_ts: float


class ChartBucket(NamedTuple):
    """One chart bucket: start, min, max, mean and sample count."""

    t: float
    min: float
    max: float
    avg: float
    samples: int


def _table(name: str) -> str:
    # Table names are interpolated into SQL: only the two bucket tables, never a caller's string.
    if name not in _BUCKET_TABLES:
        raise ValueError(f"not an aggregate table: {name!r}")
    return name


# ---- job progress (aggregator_state) -------------------------------------------------------------
async def last_id(db: Database, name: str) -> int:
    """The last source row id the job ``name`` processed (0 before its first run)."""
    row = await db.fetchone("SELECT last_id FROM aggregator_state WHERE name=?", (name,))
    return 0 if row is None else int(row["last_id"])


async def watermark(conn: aiosqlite.Connection, name: str) -> float | None:
    """The job's data watermark (newest sample time seen), read inside the caller's transaction."""
    async with conn.execute("SELECT watermark_ts FROM aggregator_state WHERE name=?", (name,)) as cur:
        row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def save_telemetry_progress(
    conn: aiosqlite.Connection, name: str, last_id: int, watermark: float | None, last_1m: int | None,
    last_1h: int | None, last_daily: str | None, late: int, now: float,
) -> None:
    """Record a telemetry aggregation chunk: newest id, watermark, newest buckets touched, late samples."""
    await conn.execute(
        "INSERT INTO aggregator_state(name, last_id, watermark_ts, last_ts_1m, last_ts_1h, last_ts_daily,"
        " late_dropped, runs, updated_at) VALUES (?,?,?,?,?,?,?,1,?)"
        " ON CONFLICT(name) DO UPDATE SET last_id=excluded.last_id, watermark_ts=excluded.watermark_ts,"
        " last_ts_1m=MAX(IFNULL(last_ts_1m, 0), IFNULL(excluded.last_ts_1m, 0)),"
        " last_ts_1h=MAX(IFNULL(last_ts_1h, 0), IFNULL(excluded.last_ts_1h, 0)),"
        " last_ts_daily=MAX(IFNULL(last_ts_daily, ''), IFNULL(excluded.last_ts_daily, '')),"
        " late_dropped=late_dropped + excluded.late_dropped, runs=runs + 1, updated_at=excluded.updated_at",
        (name, last_id, watermark, last_1m, last_1h, last_daily, late, now))


async def save_progress(conn: aiosqlite.Connection, name: str, last_id: int, now: float) -> None:
    """Record the last source row id a (non-telemetry) job processed."""
    await conn.execute(
        "INSERT INTO aggregator_state(name, last_id, runs, updated_at) VALUES (?,?,1,?)"
        " ON CONFLICT(name) DO UPDATE SET last_id=excluded.last_id, runs=runs+1, updated_at=excluded.updated_at",
        (name, last_id, now))


# ---- building the aggregates ---------------------------------------------------------------------
async def max_sample_id(db: Database) -> int:
    """The newest ``telemetry_samples`` id (0 when empty)."""
    row = await db.fetchone("SELECT MAX(id) AS m FROM telemetry_samples")
    return int(row["m"]) if row is not None and row["m"] is not None else 0


async def new_minutes(conn: aiosqlite.Connection, lo: int, hi: int) -> list[MinuteCount]:
    """The minutes touched by samples with ``lo < id <= hi``."""
    async with conn.execute(
        f"SELECT {_MINUTE_EXPR} AS b, COUNT(*), MAX(ts) FROM telemetry_samples WHERE id > ? AND id <= ?"
        " GROUP BY b", (lo, hi)) as cur:
        return [MinuteCount(int(r[0]), int(r[1]), float(r[2])) for r in await cur.fetchall()]


async def rebuild_minutes(conn: aiosqlite.Connection, first: int, last: int) -> None:
    """Recompute the minute buckets ``first``..``last`` (inclusive) from the samples."""
    await conn.execute("DELETE FROM telemetry_agg_1m WHERE bucket_start BETWEEN ? AND ?", (first, last))
    # The ts range (with 1 s slack) walks the index; the exact bucket test matches the GROUP BY expression.
    await conn.execute(
        "INSERT INTO telemetry_agg_1m(bucket_start, zone_id, node_id, metric_type, min, max, avg, sum, count)"
        f" SELECT {_MINUTE_EXPR} AS b, zone_id, node_id, metric_type, MIN(value), MAX(value), AVG(value),"
        " SUM(value), COUNT(*) FROM telemetry_samples"
        f" WHERE ts >= ? AND ts < ? AND {_MINUTE_EXPR} BETWEEN ? AND ?"
        " GROUP BY b, zone_id, node_id, metric_type",
        (first - 1, last + 61, first, last))


async def rebuild_hours(conn: aiosqlite.Connection, first: int, last: int) -> None:
    """Recompute the hour buckets ``first``..``last`` (inclusive) from the minutes."""
    await conn.execute("DELETE FROM telemetry_agg_1h WHERE bucket_start BETWEEN ? AND ?", (first, last))
    await conn.execute(
        "INSERT INTO telemetry_agg_1h(bucket_start, zone_id, node_id, metric_type, min, max, avg, sum, count)"
        " SELECT bucket_start - bucket_start % 3600 AS h, zone_id, node_id, metric_type, MIN(min), MAX(max),"
        " SUM(sum) / SUM(count), SUM(sum), SUM(count) FROM telemetry_agg_1m"
        " WHERE bucket_start >= ? AND bucket_start < ? GROUP BY h, zone_id, node_id, metric_type",
        (first, last + 3600))


async def rebuild_day(conn: aiosqlite.Connection, d: date, start: int, end: int, source: str) -> None:
    """Recompute local date ``d`` ([start, end) in UTC seconds) from ``source`` (minutes or hours)."""
    await conn.execute("DELETE FROM telemetry_daily WHERE date = ?", (d.isoformat(),))
    await conn.execute(
        "INSERT INTO telemetry_daily(date, zone_id, node_id, metric_type, min, max, avg, sum, count)"
        " SELECT ?, zone_id, node_id, metric_type, MIN(min), MAX(max), SUM(sum) / SUM(count), SUM(sum), SUM(count)"
        f" FROM {_table(source)} WHERE bucket_start >= ? AND bucket_start < ? GROUP BY zone_id, node_id, metric_type",
        (d.isoformat(), start, end))


async def prune(db: Database, table: str, before: float) -> int:
    """Delete the buckets of ``table`` (minutes or hours) that start before ``before``; returns how many."""
    async with db.transaction() as conn:
        cur = await conn.execute(f"DELETE FROM {_table(table)} WHERE bucket_start < ?", (before,))
        return cur.rowcount


# ---- charts --------------------------------------------------------------------------------------
async def newest_bucket(db: Database, table: str, zone_id: int, metric: str, start: float) -> int | None:
    """Start of the newest bucket of ``table`` for (zone, metric) at or after ``start``."""
    row = await db.fetchone(
        f"SELECT MAX(bucket_start) FROM {_table(table)} WHERE zone_id = :zone AND metric_type = :metric"
        " AND bucket_start >= :start",
        {"zone": zone_id, "metric": metric, "start": start},
    )
    return None if row is None or row[0] is None else int(row[0])


async def chart_from_aggregates(
    db: Database, table: str, zone_id: int, metric: str, bucket_s: int, start: float, cutoff: float
) -> list[ChartBucket]:
    """Chart buckets of width ``bucket_s`` built from ``table`` over [start, cutoff)."""
    rows = await db.fetchall(
        "SELECT CAST(bucket_start / :b AS INTEGER) * :b AS t, MIN(min), MAX(max), SUM(sum) / SUM(count), SUM(count)"
        f" FROM {_table(table)} WHERE zone_id = :zone AND metric_type = :metric AND bucket_start >= :start"
        " AND bucket_start < :cutoff GROUP BY 1 ORDER BY 1",
        {"b": bucket_s, "zone": zone_id, "metric": metric, "start": start, "cutoff": cutoff},
    )
    return [_bucket(r) for r in rows]


async def chart_from_samples(
    db: Database, zone_id: int, metric: str, bucket_s: int, cutoff: float, end: float
) -> list[ChartBucket]:
    """Chart buckets of width ``bucket_s`` built from the raw samples over [cutoff, end)."""
    rows = await db.fetchall(
        "SELECT CAST(ts / :b AS INTEGER) * :b AS t, MIN(value), MAX(value), AVG(value), COUNT(*)"
        " FROM telemetry_samples WHERE zone_id = :zone AND metric_type = :metric AND ts >= :cutoff AND ts < :end"
        " GROUP BY 1 ORDER BY 1",
        {"b": bucket_s, "zone": zone_id, "metric": metric, "cutoff": cutoff, "end": end},
    )
    return [_bucket(r) for r in rows]


def _bucket(r: aiosqlite.Row) -> ChartBucket:
    return ChartBucket(float(r[0]), float(r[1]), float(r[2]), float(r[3]), int(r[4]))
