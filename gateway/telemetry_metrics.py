"""The metric dictionary (seed 003 §7): one Enum, normalised at the edge, unknown names rejected."""

from __future__ import annotations

from enum import StrEnum


class Metric(StrEnum):
    """Canonical metric types with their units in the docstring table below.

    ph (pH), ec (mS/cm), temp_air/temp_water (°C), humidity (%RH), co2 (ppm), lux (lx),
    water_level (% of tank), flow_rate (L/min), pump_current (A).
    """

    PH = "ph"
    EC = "ec"
    TEMP_AIR = "temp_air"
    TEMP_WATER = "temp_water"
    HUMIDITY = "humidity"
    CO2 = "co2"
    LUX = "lux"
    WATER_LEVEL = "water_level"
    FLOW_RATE = "flow_rate"
    PUMP_CURRENT = "pump_current"


CANONICAL_METRICS: dict[str, Metric] = {m.value: m for m in Metric}

# Physically possible ranges; a value outside is a sensor or firmware fault, not data.
PHYSICAL_RANGE: dict[Metric, tuple[float, float]] = {
    Metric.PH: (0.0, 14.0),
    Metric.EC: (0.0, 20.0),
    Metric.TEMP_AIR: (-40.0, 80.0),
    Metric.TEMP_WATER: (-5.0, 60.0),
    Metric.HUMIDITY: (0.0, 100.0),
    Metric.CO2: (0.0, 20_000.0),
    Metric.LUX: (0.0, 200_000.0),
    Metric.WATER_LEVEL: (0.0, 100.0),
    Metric.FLOW_RATE: (0.0, 1000.0),
    Metric.PUMP_CURRENT: (0.0, 50.0),
}


class UnknownMetricError(ValueError):
    """A metric name outside the dictionary."""

    def __init__(self, raw: str) -> None:
        super().__init__(f"unknown metric {raw!r}")
        self.raw = raw


def normalize_metric_type(raw: str) -> Metric:
    """Trim and lowercase; raise UnknownMetricError for names outside the dictionary."""
    key = raw.strip().lower()
    try:
        return CANONICAL_METRICS[key]
    except KeyError:
        raise UnknownMetricError(raw) from None
