"""The embedded demo: a two-zone simulated greenhouse on fake hardware, nodes over real MQTT.

Each zone has a tank (``TankSim``) whose pumps are driven by the gateway's own (simulated) GPIO
relays; the simulated INA209s see the pump currents; eight simulated ESP32 nodes publish what the
tanks' sensors read and execute dosing and irrigation commands on them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from drivers.hardware import Hardware
from gateway.jsonvalue import opt_float
from gateway.sim.history import write_history
from gateway.sim.nodes import SimNode, SimNodeSpec
from gateway.sim.tank import Fault, TankSim
from gateway.sim.wiring import SimServices

log = logging.getLogger(__name__)

DEMO_ADMIN_TOKEN = "demo-admin-token"
_ZONES = (("zone-a", "Lettuce", "a", 17, 0x40), ("zone-b", "Basil", "b", 5, 0x44))
_DOSE_REAGENT = {"ph_down": "ph_down", "ph_up": "ph_up", "nutrient_a": "nutrient", "nutrient_b": "nutrient"}


def _water_cycle() -> dict[str, object]:
    return {
        "mode": "RECIRCULATING",
        "recirc": {
            "enabled": True,
            "schedule": [{"from": "00:00", "to": "23:59", "duty_cycle": 0.75}],
            "max_recirc_off_minutes": 10,
        },
        "water_change": {
            "enabled": True,
            "interval_days": 7,
            "time_of_day": "09:00",
            "max_solution_age_days": 10,
            "trigger_by_ec_drift": True,
            "ec_drift_threshold": 30,
        },
    }


def _recipe(name: str, ph: tuple[float, float], ec: tuple[float, float]) -> dict[str, object]:
    return {
        "name": name,
        "phases": [
            {"name": "seedling", "start_day": 0, "ph": {"min": ph[0], "max": ph[1]},
             "ec": {"min": ec[0] - 0.4, "max": ec[1] - 0.4},
             "irrigation": {"times": "08:00,12:00,18:00", "duration_s": 60}},
            {"name": "growth", "start_day": 7, "ph": {"min": ph[0], "max": ph[1]}, "ec": {"min": ec[0], "max": ec[1]},
             "irrigation": {"times": "07:00,11:00,15:00,19:00", "duration_s": 90}},
        ],
    }


def demo_config(data_dir: Path, http_port: int = 8080, mqtt_port: int = 1883) -> dict[str, object]:
    """The demo's settings as a config mapping (same shape as gateway.toml)."""
    relays: list[dict[str, object]] = []
    ina: list[dict[str, object]] = []
    zones: list[dict[str, object]] = []
    nodes: list[dict[str, object]] = []
    for uid, name, short, pin0, addr0 in _ZONES:
        for i, (role, mode, logic) in enumerate(
            (("recirc", "NC", "active_open"), ("drain", "NO", "active_close"), ("fill", "NO", "active_close"))
        ):
            channel = f"{short}-{role}"
            relays.append(
                {
                    "name": channel,
                    "zone": uid,
                    "role": role,
                    "pin": pin0 + i,
                    "fail_safe_mode": mode,
                    "relay_logic": logic,
                }
            )
            ina.append(
                {
                    "channel": channel,
                    "bus": 1,
                    "address": addr0 + i,
                    "shunt_ohms": 0.1,
                    "max_expected_amps": 3.0,
                    "warning_amps": 1.2,
                    "critical_amps": 1.5,
                }
            )
        zones.append(
            {
                "uid": uid,
                "name": name,
                "water_cycle": _water_cycle(),
                "tank_volume_l": 100.0,
                "actuators": {
                    "recirc": {"channel": f"{short}-recirc"},
                    "drain": {"channel": f"{short}-drain", "flow_l_min": 10.0},
                    "fill": {"channel": f"{short}-fill", "flow_l_min": 10.0},
                    "irrigation": {"channel": "pump_irrigation", "node_uid": f"nd-{short}-water", "flow_l_min": 4.0},
                    "ph_down": {"channel": "ph_down", "node_uid": f"nd-{short}-doser", "ml_per_s": 1.0},
                    "ph_up": {"channel": "ph_up", "node_uid": f"nd-{short}-doser", "ml_per_s": 1.0},
                    "nutrient_a": {"channel": "nutrient_a", "node_uid": f"nd-{short}-doser", "ml_per_s": 2.0},
                },
            }
        )
        for kind in ("ph", "climate", "water", "doser"):
            nodes.append(
                {"hardware_id": f"esp32-{short}-{kind}", "uid": f"nd-{short}-{kind}", "zone": uid, "node_type": kind}
            )
    start = (date.today() - timedelta(days=10)).isoformat()
    for zone in zones:
        zone.update(recipe="lettuce" if zone["uid"] == "zone-a" else "basil", recipe_start=start)
    return {
        "recipes": {
            "lettuce": _recipe("Lettuce NFT", (5.8, 6.2), (1.4, 1.8)),
            "basil": _recipe("Basil", (5.9, 6.4), (1.2, 1.6)),
        },
        "gateway": {
            "id": "gw-demo",
            "greenhouse_uid": "gh-demo",
            "mode": "demo",
            "data_dir": str(data_dir),
            "timezone": "Europe/Moscow",
        },
        "broker": {"host": "127.0.0.1", "port": mqtt_port, "allow_anonymous": True},
        "web": {"host": "127.0.0.1", "port": http_port, "admin_token": DEMO_ADMIN_TOKEN},
        "nodes_health": {"heartbeat_interval_s": 10.0},
        "hardware": {
            "backend": "sim",
            "relays": relays,
            "ina209": ina,
            "watchdog": {"heartbeat_pin": 26, "timeout_s": 2.0},
        },
        "zones": zones,
        "nodes": nodes,
    }


class ZoneSim:
    """One zone's tank, wired to the gateway's relays and simulated INA209s."""

    def __init__(self, zone_uid: str, short: str, seed: int) -> None:
        self.zone_uid = zone_uid
        self.short = short
        self.tank = TankSim(capacity_l=100.0, level_pct=80.0, ph=6.1, ec=1.6, seed=seed)
        self.pending_doses: dict[str, float] = {}
        self.jammed_node_pumps: set[str] = set()

    def step(self, hardware: Hardware, dt: float) -> None:
        """Advance physics with the relays' current state and update the INA209 chips."""
        relays = hardware.relays
        pumps = {role: relays[f"{self.short}-{role}"].pump_on for role in ("recirc", "drain", "fill")}
        doses, self.pending_doses = self.pending_doses, {}
        self.tank.step(dt, pumps, doses)
        for role in ("recirc", "drain", "fill"):
            chip = hardware.sim_chips.get(f"{self.short}-{role}")
            if chip is not None:
                chip.set_conditions(current_a=self.tank.current_reading(role), bus_voltage_v=12.0)

    async def on_dose_command(self, channel: str, cmd: dict[str, Any]) -> dict[str, Any]:
        """Dosing node: add the dose to the tank."""
        params = cmd.get("params") or {}
        ml = float(params.get("ml", 0.0))
        reagent = _DOSE_REAGENT.get(channel)
        if cmd.get("cmd") != "dose" or reagent is None or not 0 < ml <= 100:
            return {"status": "ERROR", "error_code": "bad_params", "details": {"channel": channel}}
        await asyncio.sleep(min(ml, 5.0) * 0.1)
        self.pending_doses[reagent] = self.pending_doses.get(reagent, 0.0) + ml
        return {"status": "DONE", "details": {"ml": ml}}

    async def on_water_command(self, channel: str, cmd: dict[str, Any]) -> dict[str, Any]:
        """Water node: irrigation pump; a jammed pump answers overcurrent like the real firmware."""
        if channel in self.jammed_node_pumps and cmd.get("cmd") in ("run_pump", "irrigate", "pump_on"):
            return {
                "status": "ERROR",
                "error_code": "overcurrent",
                "details": {"channel": channel, "current_ma": 2300, "threshold_ma": 1500},
            }
        await asyncio.sleep(0.2)
        return {"status": "DONE"}


class DemoSimulation:
    """The simulated greenhouse attached to a running gateway; also the fault-injection surface."""

    def __init__(self, services: SimServices, telemetry_s: float = 2.0, history_days: float = 7.0) -> None:
        self._services = services
        self.telemetry_s = telemetry_s
        self.history_days = history_days
        self.simulated_until: float | None = None  # end of the simulated past written at start, if any
        self.zones = {uid: ZoneSim(uid, short, seed=i) for i, (uid, _n, short, _p, _a) in enumerate(_ZONES)}
        self.nodes: list[SimNode] = []

    def inject(self, zone_uid: str, fault: str, role: str) -> None:
        """Inject a fault: tank faults per pump role, or ``jammed`` on a node pump channel."""
        zone = self.zones[zone_uid]
        if role == "pump_irrigation":
            if fault != "jammed":
                raise ValueError("node pumps support only the 'jammed' fault")
            zone.jammed_node_pumps.add(role)
            return
        zone.tank.inject(Fault(fault), role)

    def clear(self, zone_uid: str, fault: str, role: str) -> None:
        """Remove an injected fault."""
        zone = self.zones[zone_uid]
        if role == "pump_irrigation":
            zone.jammed_node_pumps.discard(role)
            return
        zone.tank.clear(Fault(fault), role)

    async def run(self) -> None:
        """Physics at 5 Hz plus every simulated node, until cancelled."""
        gw = self._services
        uri = f"mqtt://127.0.0.1:{gw.broker.port}"
        gh = gw.settings.gateway.greenhouse_uid
        if self.history_days > 0:
            # Before any node publishes, so the aggregator sees the past as one batch, oldest first.
            zones = [(z.zone_uid, z.short) for z in self.zones.values()]
            self.simulated_until = await write_history(gw, zones, self.history_days)
            if self.simulated_until is None:
                self.simulated_until = opt_float(await gw.db.get_state("demo_simulated_until"))
        for zone in self.zones.values():
            s = zone.short
            readings = zone.tank.readings
            specs = [
                (SimNodeSpec(f"nd-{s}-ph", f"esp32-{s}-ph", "ph", zone.zone_uid, ("ph", "ec", "temp_water")), None),
                (
                    SimNodeSpec(
                        f"nd-{s}-climate",
                        f"esp32-{s}-climate",
                        "climate",
                        zone.zone_uid,
                        ("temp_air", "humidity", "co2", "lux"),
                    ),
                    None,
                ),
                (
                    SimNodeSpec(
                        f"nd-{s}-water",
                        f"esp32-{s}-water",
                        "water",
                        zone.zone_uid,
                        ("water_level", "flow_rate"),
                        channels=("pump_irrigation",),
                    ),
                    zone.on_water_command,
                ),
                (
                    SimNodeSpec(
                        f"nd-{s}-doser",
                        f"esp32-{s}-doser",
                        "doser",
                        zone.zone_uid,
                        (),
                        channels=("ph_down", "ph_up", "nutrient_a"),
                    ),
                    zone.on_dose_command,
                ),
            ]
            for spec, handler in specs:
                self.nodes.append(
                    SimNode(
                        spec,
                        gh,
                        uri,
                        readings,
                        on_command=handler,
                        telemetry_s=self.telemetry_s,
                        heartbeat_s=gw.settings.nodes_health.heartbeat_interval_s / 2,
                    )
                )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._physics())
            for node in self.nodes:
                tg.create_task(node.run())

    async def _physics(self, dt: float = 0.2) -> None:
        while True:
            for zone in self.zones.values():
                zone.step(self._services.hardware, dt)
            await asyncio.sleep(dt)
