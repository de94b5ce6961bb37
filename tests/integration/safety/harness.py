"""A safety-loop harness on the demo's wiring: sim relays and INA209s, tank physics, a manual clock."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.hardware import Hardware, open_hardware
from drivers.sdnotify_client import SystemdNotifier
from gateway.alerts import Alerts
from gateway.clock import ManualClock
from gateway.commands import CommandService
from gateway.prometheus import Metrics
from gateway.readings import LatestReadings, Reading
from gateway.registry import Registry
from gateway.safety.channels import PumpChannel, build_channels
from gateway.safety.gate import SafetyGate
from gateway.safety.service import SafetyService
from gateway.safety.usage import UsageLogger
from gateway.settings import Settings, settings_from_mapping
from gateway.sim.demo import ZoneSim, demo_config
from gateway.store.db import Database
from gateway.telemetry_metrics import Metric
from gateway.water.service import WaterService


async def _no_publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
    return None


@dataclass
class Harness:
    """Everything below the MQTT layer, driven tick by tick."""

    settings: Settings
    clock: ManualClock
    db: Database
    alerts: Alerts
    latest: LatestReadings
    hardware: Hardware
    safety: SafetyService
    water: WaterService
    commands: CommandService
    zone: ZoneSim
    zone_id: int
    feed_flow: bool = True
    feed_level: bool = True

    @property
    def gate(self) -> SafetyGate:
        return self.safety.gate

    def ch(self, role: str) -> PumpChannel:
        ch = self.gate.channel_by_role(self.zone_id, role)
        assert ch is not None
        return ch

    def relay(self, role: str) -> Any:
        return self.hardware.relays[f"a-{role}"]

    def sensors_now(self) -> None:
        """The water node's latest readings, as ingest would record them."""
        readings = self.zone.tank.readings()
        now = self.clock.monotonic()
        for metric, enabled in ((Metric.WATER_LEVEL, self.feed_level), (Metric.FLOW_RATE, self.feed_flow),
                                (Metric.EC, True)):
            value = readings[metric.value]
            if enabled and value is not None:
                self.latest.update(self.zone_id, metric, Reading(float(value), now, self.clock.time(), 1, None))

    async def run_for(self, seconds: float, dt: float = 0.1, water: bool = False) -> None:
        """Physics, sensors and safety ticks for ``seconds`` of manual time."""
        steps = round(seconds / dt)
        for i in range(steps):
            self.zone.step(self.hardware, dt)
            self.sensors_now()
            await self.safety.tick()
            self.safety.watchdog.feed()
            if water and i % round(1 / dt) == 0:
                await self.water.tick()
            await self.clock.advance(dt)

    async def active_codes(self) -> list[str]:
        return sorted(a["code"] for a in await self.alerts.active(self.zone_id, any_zone=False))

    async def events(self) -> list[str]:
        return [e["type"] for e in reversed(await self.alerts.events())]

    async def close(self) -> None:
        self.hardware.close()
        await self.db.close()


async def make_harness(tmp_path: Path, clock: ManualClock | None = None, water_change: dict[str, Any] | None = None,
                       publish: Any = None, actuators: dict[str, Any] | None = None, **safety: Any) -> Harness:
    cfg = demo_config(tmp_path / "data")
    for zone in cfg["zones"]:
        zone["water_cycle"]["water_change"].update(water_change or {})
        if zone["uid"] == "zone-a":
            zone["actuators"].update(actuators or {})
    cfg["safety"] = {"no_flow_grace_s": 5.0, **safety}
    settings = settings_from_mapping(cfg, "<harness>")
    clock = clock or ManualClock()
    db = Database(settings.db_path)
    await db.open()
    metrics = Metrics()
    alerts = Alerts(db, clock, metrics)
    registry = Registry(db, alerts, clock, metrics, _no_publish, "gh-demo", 10.0, 3)
    await registry.apply_config(settings.zones, settings.nodes)
    hardware = open_hardware(settings.hardware)
    latest = LatestReadings()
    channels = build_channels(settings, registry.zone_uids(), hardware)
    watchdog = hardware.make_watchdog(clock, SystemdNotifier())
    gate = SafetyGate(channels, db, alerts, latest, clock, metrics, settings.safety, publish or _no_publish,
                      registry, "gh-demo", watchdog)
    service = SafetyService(gate, alerts, latest, clock, metrics, settings.safety.poll_hz, UsageLogger(db, clock),
                            watchdog)
    await service.load()
    zones = {z.uid: (registry.zone_uids()[z.uid], z.water_cycle) for z in settings.zones}
    water = WaterService(zones, gate, db, alerts, latest, clock, settings.gateway.timezone)
    await water.load()
    commands = CommandService(db, alerts, registry, clock, metrics, gate, on_error=service.on_command_error)
    zone = ZoneSim("zone-a", "a", seed=3)
    zone.tank.noise = False
    return Harness(settings, clock, db, alerts, latest, hardware, service, water, commands, zone,
                   registry.zone_uids()["zone-a"])


def locks_in_db(value: str | None) -> dict[str, str]:
    return json.loads(value) if value else {}
