"""Per-scrape Prometheus families of what the greenhouse looks like now: sensors, targets and pumps.

Built at scrape time from ``telemetry_last``, the recipe targets and the safety snapshot, so they never go
stale in the registry and a removed node or zone simply disappears. Names follow the Prometheus conventions:
base units in the name (``_celsius``, ``_amperes``, ``_seconds``), one family per quantity, labels for where.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.store import samples as samples_store
from gateway.telemetry_metrics import CANONICAL_METRICS
from gateway.telemetry_metrics import Metric as Quantity
from gateway.web.plan_view import targets_now

if TYPE_CHECKING:
    from gateway.web.context import WebServices

# Metric → (family name, help). Units as Prometheus spells them; pH and ppm are dimensionless ratios.
SENSOR_FAMILIES: dict[Quantity, tuple[str, str]] = {
    Quantity.PH: ("hydro_sensor_ph", "Latest pH reading"),
    Quantity.EC: ("hydro_sensor_ec_millisiemens_per_centimeter", "Latest electrical conductivity (mS/cm)"),
    Quantity.TEMP_AIR: ("hydro_sensor_air_temperature_celsius", "Latest air temperature"),
    Quantity.TEMP_WATER: ("hydro_sensor_water_temperature_celsius", "Latest water temperature"),
    Quantity.HUMIDITY: ("hydro_sensor_relative_humidity_percent", "Latest relative humidity"),
    Quantity.CO2: ("hydro_sensor_co2_ppm", "Latest CO2 concentration (parts per million)"),
    Quantity.LUX: ("hydro_sensor_illuminance_lux", "Latest illuminance"),
    Quantity.WATER_LEVEL: ("hydro_sensor_water_level_percent", "Latest tank level (% of the tank)"),
    Quantity.FLOW_RATE: ("hydro_sensor_flow_liters_per_minute", "Latest flow rate"),
    Quantity.PUMP_CURRENT: ("hydro_sensor_pump_current_amperes", "Latest pump current reported by a node"),
}


class _Snapshot(Collector):
    """Yields the families gathered for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


async def sensor_exposition(g: WebServices) -> bytes:
    """The text exposition of the sensor, target and pump families."""
    now = g.clock.time()
    rows = await samples_store.latest(g.db)
    labels = ["zone", "node", "channel"]
    values = {m: GaugeMetricFamily(name, doc, labels=labels) for m, (name, doc) in SENSOR_FAMILIES.items()}
    age = GaugeMetricFamily(
        "hydro_sensor_age_seconds",
        "Seconds since the latest reading was received",
        labels=["zone", "node", "metric", "channel"],
    )
    zones: set[str] = set()
    for r in rows:
        metric = CANONICAL_METRICS.get(r.metric_type)
        if metric is None or r.zone_uid is None:  # a reading of a zone that no longer exists is not exported
            continue
        zone, node, channel = r.zone_uid, r.node_uid or "", r.channel or ""
        zones.add(zone)
        values[metric].add_metric([zone, node, channel], r.value)
        age.add_metric([zone, node, metric.value, channel], max(0.0, now - r.received_at))
    families: list[Metric] = [*values.values(), age]
    families.extend(_targets(g, sorted(zones | set(g.registry.zone_uids())), now))
    families.extend(_pumps(g))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry)


def _targets(g: WebServices, zones: list[str], now: float) -> list[Metric]:
    where = ["zone", "metric"]
    low = GaugeMetricFamily("hydro_target_min", "Lower end of the target range in force now", labels=where)
    high = GaugeMetricFamily("hydro_target_max", "Upper end of the target range in force now", labels=where)
    for zone in zones:
        for metric, rng in targets_now(g, zone, now).items():
            low.add_metric([zone, metric], rng["low"])
            high.add_metric([zone, metric], rng["high"])
    return [low, high]


def _pumps(g: WebServices) -> list[Metric]:
    labels = ["zone", "channel", "role", "node"]
    on = GaugeMetricFamily("hydro_pump_on", "1 while the pump is commanded ON (relay or node)", labels=labels)
    locked = GaugeMetricFamily("hydro_pump_locked", "1 while the safety loop holds a lock on the pump", labels=labels)
    current = GaugeMetricFamily("hydro_pump_current_amperes", "Pump current measured by its INA209", labels=labels)
    flow = GaugeMetricFamily("hydro_pump_flow_liters_per_minute", "Flow through the pump", labels=labels)
    zones: dict[str, Any] = g.safety.snapshot().get("zones") or {}
    for zone, z in sorted(zones.items()):
        for p in z.get("pumps") or []:
            where = [zone, str(p["channel"]), str(p.get("role") or ""), str(p.get("node_uid") or "")]
            on.add_metric(where, 1.0 if p.get("relay_on") else 0.0)
            locked.add_metric(where, 1.0 if p.get("locked") else 0.0)
            if p.get("current_a") is not None:
                current.add_metric(where, float(p["current_a"]))
            if p.get("flow_l_min") is not None:
                flow.add_metric(where, float(p["flow_l_min"]))
    return [on, locked, current, flow]
