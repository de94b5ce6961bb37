"""Chart series: the ranges the pages offer and the bucketed min/max/avg points a chart is drawn from."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.telemetry_metrics import Metric

UNITS: dict[Metric, str] = {
    Metric.PH: "pH",
    Metric.EC: "mS/cm",
    Metric.TEMP_AIR: "°C",
    Metric.TEMP_WATER: "°C",
    Metric.HUMIDITY: "%RH",
    Metric.CO2: "ppm",
    Metric.LUX: "lx",
    Metric.WATER_LEVEL: "%",
    Metric.FLOW_RATE: "L/min",
    Metric.PUMP_CURRENT: "A",
}
DECIMALS: dict[Metric, int] = {
    Metric.PH: 2,
    Metric.EC: 2,
    Metric.TEMP_AIR: 1,
    Metric.TEMP_WATER: 1,
    Metric.HUMIDITY: 0,
    Metric.CO2: 0,
    Metric.LUX: 0,
    Metric.WATER_LEVEL: 0,
    Metric.FLOW_RATE: 1,
    Metric.PUMP_CURRENT: 2,
}
LABELS: dict[Metric, str] = {
    Metric.PH: "pH",
    Metric.EC: "EC",
    Metric.TEMP_AIR: "Air temperature",
    Metric.TEMP_WATER: "Water temperature",
    Metric.HUMIDITY: "Humidity",
    Metric.CO2: "CO₂",
    Metric.LUX: "Light",
    Metric.WATER_LEVEL: "Water level",
    Metric.FLOW_RATE: "Flow",
    Metric.PUMP_CURRENT: "Pump current",
}
# What the zone page charts, in this order.
ZONE_CHARTS: tuple[Metric, ...] = (
    Metric.PH,
    Metric.EC,
    Metric.TEMP_WATER,
    Metric.TEMP_AIR,
    Metric.WATER_LEVEL,
    Metric.FLOW_RATE,
)


@dataclass(frozen=True)
class ChartRange:
    """A time window and the bucket width its points are averaged over."""

    key: str
    span_s: int
    bucket_s: int
    label: str
    aggregates: str  # the aggregate table the points are built from (a multiple of its buckets)


RANGES: dict[str, ChartRange] = {
    "1h": ChartRange("1h", 3600, 60, "last hour", "telemetry_agg_1m"),
    "24h": ChartRange("24h", 24 * 3600, 300, "last 24 hours", "telemetry_agg_1m"),
    "7d": ChartRange("7d", 7 * 24 * 3600, 3600, "last 7 days", "telemetry_agg_1h"),
}


@dataclass(frozen=True)
class ChartPoint:
    """One bucket: start time (unix s) and the min/max/avg/count of the samples in it."""

    t: float
    min: float
    max: float
    avg: float
    count: int


@dataclass(frozen=True)
class ChartSeries:
    """A metric of one zone over a range, ready to draw or to serve as JSON."""

    zone_uid: str
    metric: Metric
    range: ChartRange
    start: float
    end: float
    source: str
    points: tuple[ChartPoint, ...]

    @property
    def unit(self) -> str:
        """Display unit of the metric."""
        return UNITS[self.metric]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (the /api/zones/{zone}/chart body)."""
        return {
            "zone": self.zone_uid,
            "metric": self.metric.value,
            "unit": self.unit,
            "range": self.range.key,
            "bucket_s": self.range.bucket_s,
            "from": self.start,
            "to": self.end,
            "source": self.source,
            "points": [{"t": p.t, "min": p.min, "max": p.max, "avg": p.avg, "count": p.count} for p in self.points],
        }
