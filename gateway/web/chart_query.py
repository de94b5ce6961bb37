"""Chart data from SQLite: bucketed min/max/avg of one metric of one zone over a range.

The points come from the aggregates (``telemetry_agg_1m`` for 24 h, ``telemetry_agg_1h`` for 7 days,
written by the automation's aggregator); the newest chart bucket, which the aggregator may not have
finished, and anything after it come from ``telemetry_samples``. With no aggregates yet (a fresh
gateway) the whole range comes from the samples.
"""

from __future__ import annotations

from gateway.store import aggregates
from gateway.store.db import Database
from gateway.telemetry_metrics import Metric
from gateway.web.series import ChartPoint, ChartRange, ChartSeries


async def load_series(
    db: Database, zone_id: int, zone_uid: str, metric: Metric, rng: ChartRange, now: float
) -> ChartSeries:
    """The series ending now; buckets are aligned to multiples of the bucket width (stable between refreshes)."""
    b = rng.bucket_s
    start, end = now - rng.span_s, now
    newest = await aggregates.newest_bucket(db, rng.aggregates, zone_id, metric.value, start)
    cutoff = start
    sources = []
    agg_rows: list[aggregates.ChartBucket] = []
    if newest is not None:
        # From the chart bucket holding the newest aggregate on, the samples are complete; the aggregate may not be.
        cutoff = max(start, (newest // b) * b)
        agg_rows = await aggregates.chart_from_aggregates(db, rng.aggregates, zone_id, metric.value, b, start, cutoff)
        if agg_rows:
            sources.append(rng.aggregates)
    raw_rows = await aggregates.chart_from_samples(db, zone_id, metric.value, b, cutoff, end)
    if raw_rows or not sources:
        sources.append("telemetry_samples")
    points = tuple(ChartPoint(r.t, r.min, r.max, r.avg, r.samples) for r in [*agg_rows, *raw_rows])
    return ChartSeries(zone_uid, metric, rng, start, end, "+".join(sources), points)
