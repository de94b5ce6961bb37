"""Chart data from SQLite: bucketed min/max/avg of one metric of one zone over a range.

The points come from the aggregates (``telemetry_agg_1m`` for 24 h, ``telemetry_agg_1h`` for 7 days,
written by the automation's aggregator); the newest chart bucket, which the aggregator may not have
finished, and anything after it come from ``telemetry_samples``. With no aggregates yet (a fresh
gateway) the whole range comes from the samples.
"""

from __future__ import annotations

from gateway.metric_types import Metric
from gateway.store.db import Database
from gateway.web.series import ChartPoint, ChartRange, ChartSeries

# Table names come from RANGES (constants), never from the request.
AGG_SQL = (
    "SELECT CAST(bucket_start / :b AS INTEGER) * :b AS t, MIN(min), MAX(max), SUM(sum) / SUM(count), SUM(count)"
    " FROM {table} WHERE zone_id = :zone AND metric_type = :metric AND bucket_start >= :start"
    " AND bucket_start < :cutoff GROUP BY 1 ORDER BY 1"
)
NEWEST_AGG_SQL = (
    "SELECT MAX(bucket_start) FROM {table} WHERE zone_id = :zone AND metric_type = :metric AND bucket_start >= :start"
)
SAMPLES_SQL = (
    "SELECT CAST(ts / :b AS INTEGER) * :b AS t, MIN(value), MAX(value), AVG(value), COUNT(*)"
    " FROM telemetry_samples WHERE zone_id = :zone AND metric_type = :metric AND ts >= :cutoff AND ts < :end"
    " GROUP BY 1 ORDER BY 1"
)


async def load_series(
    db: Database, zone_id: int, zone_uid: str, metric: Metric, rng: ChartRange, now: float
) -> ChartSeries:
    """The series ending now; buckets are aligned to multiples of the bucket width (stable between refreshes)."""
    b = rng.bucket_s
    start, end = now - rng.span_s, now
    params = {"b": b, "zone": zone_id, "metric": metric.value, "start": start, "end": end}
    newest = await db.fetchone(NEWEST_AGG_SQL.format(table=rng.aggregates), params)
    cutoff = start
    sources = []
    agg_rows = []
    if newest is not None and newest[0] is not None:
        # From the chart bucket holding the newest aggregate on, the samples are complete; the aggregate may not be.
        cutoff = max(start, (int(newest[0]) // b) * b)
        agg_rows = await db.fetchall(AGG_SQL.format(table=rng.aggregates), {**params, "cutoff": cutoff})
        if agg_rows:
            sources.append(rng.aggregates)
    raw_rows = await db.fetchall(SAMPLES_SQL, {**params, "cutoff": cutoff})
    if raw_rows or not sources:
        sources.append("telemetry_samples")
    points = tuple(
        ChartPoint(float(r[0]), float(r[1]), float(r[2]), float(r[3]), int(r[4])) for r in [*agg_rows, *raw_rows]
    )
    return ChartSeries(zone_uid, metric, rng, start, end, "+".join(sources), points)
