"""Closed loop on a simulated tank: TankSim → telemetry_last → controller → dose commands → TankSim (manual clock)."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.automation.dosing import DosingConfig, Param
from gateway.automation.dosing_service import DosingService, LatestReadingsSource, TelemetryLastSource
from gateway.automation.recipes import recipes_from_mapping
from gateway.automation.zones import zone_plans
from gateway.clock import ManualClock
from gateway.prometheus import Metrics
from gateway.readings import LatestReadings, Reading
from gateway.settings import ActuatorRef, NodeConfig, ZoneConfig
from gateway.sim.tank import TankSim
from gateway.telemetry_metrics import Metric
from gateway.writer import SampleRow, TelemetryWriter
from tests.fakes.sim_doser import SimDoser, TankPublish
from tests.integration.automation.stack import FakeZoneState, Recorder, Stack, open_stack

UTC = ZoneInfo("UTC")
RECIPE = {"phases": [{"start_day": 0, "ph": {"min": 5.8, "max": 6.2}, "ec": {"min": 1.6, "max": 2.0}}]}
NODES = [NodeConfig(hardware_id="esp-dose", uid="nd-dose", zone="zone-a", node_type="dosing"),
         NodeConfig(hardware_id="esp-ph", uid="nd-ph", zone="zone-a", node_type="ph")]
ACTUATORS = {role: ActuatorRef(channel=f"pump_{role}", node_uid="nd-dose", ml_per_s=1.0)
             for role in ("ph_down", "nutrient_a", "nutrient_b")}
ZONE = ZoneConfig(uid="zone-a", recipe="lettuce", recipe_start="2025-12-01", actuators=ACTUATORS, tank_volume_l=80.0)


class Loop:
    """The simulated greenhouse around one DosingService."""

    def __init__(self, stack: Stack, tank: TankSim, zone_state: FakeZoneState, cfg: DosingConfig | None = None,
                 source: str = "telemetry_last") -> None:
        assert isinstance(stack.clock, ManualClock)
        self.stack, self.tank, self.clock = stack, tank, stack.clock
        self.zone_state = zone_state
        self.writer = TelemetryWriter(stack.db, stack.clock, Metrics())
        self.latest = LatestReadings()
        readings = TelemetryLastSource(stack.db) if source == "telemetry_last" else LatestReadingsSource(
            self.latest, self.clock)
        self.service = DosingService(stack.db, stack.alerts, stack.commands, zone_state, readings, stack.clock,
                                     zone_plans([ZONE], recipes_from_mapping({"lettuce": RECIPE})), UTC, cfg)
        self.trace: list[tuple[float, float, float]] = []
        self.sensors_on = True

    async def report(self) -> None:
        values = self.tank.readings()
        zone_id, node = await self.stack.zone_id("zone-a"), self.stack.registry.get("nd-ph")
        assert node is not None
        now = self.clock.time()
        for metric in (Metric.PH, Metric.EC):
            value = values[metric.value]
            assert value is not None
            await self.writer.put_many([SampleRow(zone_id, node.id, metric.value, None, value, now, now, "node", 1,
                                                  None)])
            self.latest.update(zone_id, metric, Reading(value, self.clock.monotonic(), now, node.id, None))
        await self.writer.flush()

    async def run(self, seconds: float, step: float = 60.0) -> None:
        for _ in range(int(seconds / step)):
            self.tank.step(step, {"recirc": True})
            await self.clock.advance(step)
            if self.sensors_on:
                await self.report()
            await self.service.tick()
            self.trace.append((self.clock.time(), self.tank.ph, self.tank.ec))


async def _loop(tmp_path: Path, *, ph: float = 6.0, ec: float = 1.8, cfg: DosingConfig | None = None,
                broken_doser: bool = False, source: str = "telemetry_last") -> Loop:
    tank = TankSim(capacity_l=100.0, level_pct=80.0, ph=ph, ec=ec, seed=3)
    publish: Any = Recorder() if broken_doser else TankPublish(SimDoser(tank))
    stack = await open_stack(tmp_path / "gw.db", [ZONE], NODES, publish=publish)
    return Loop(stack, tank, FakeZoneState(), cfg, source)


async def _doses(loop: Loop) -> list[dict[str, Any]]:
    rows = await loop.stack.db.fetchall(
        "SELECT d.*, c.params, c.source, c.status FROM dosing_log d JOIN commands c ON c.cmd_id = d.cmd_id"
        " ORDER BY d.id")
    return [dict(r) for r in rows]


def _max_window_ml(doses: list[dict[str, Any]], reagent: str, window: float) -> float:
    times = [(d["created_at"], d["ml"]) for d in doses if d["reagent"] == reagent]
    return max((sum(ml for t, ml in times if start <= t < start + window) for start, _ in times), default=0.0)


async def test_a_simulated_day_keeps_ph_and_ec_in_range_without_overshoot(tmp_path: Path) -> None:
    loop = await _loop(tmp_path)
    await loop.run(36 * 3600)
    phs, ecs = [p for _, p, _ in loop.trace], [e for _, _, e in loop.trace]
    assert min(phs) >= 5.8 and max(phs) <= 6.2
    assert min(phs) >= 5.9  # no overshoot past the set point's neighbourhood
    assert min(ecs) >= 1.6 and max(ecs) <= 2.0
    doses = await _doses(loop)
    reagents = {d["reagent"] for d in doses}
    assert reagents == {"ph_down", "nutrient_a", "nutrient_b"}
    assert all(d["source"] == "automation" and d["status"] == "SENT" for d in doses)
    first = next(d for d in doses if d["reagent"] == "ph_down")
    assert json.loads(first["params"]) == {"ml": first["ml"], "reagent": "ph_down", "duration_s": first["ml"]}
    events = await loop.stack.events("DOSE")
    assert len(events) == len(doses) and events[0]["details"]["cmd_id"] == doses[0]["cmd_id"]
    cfg = loop.service.config
    for reagent in reagents:
        tune = cfg.tuning(Param.PH if reagent == "ph_down" else Param.EC)
        assert _max_window_ml(doses, reagent, 3600) <= tune.hourly_cap_ml + 1e-9
        assert _max_window_ml(doses, reagent, 86_400) <= tune.daily_cap_ml + 1e-9
    gaps = [b["created_at"] - a["created_at"] for a, b in itertools.pairwise(doses)
            if a["parameter"] == b["parameter"] and b["created_at"] != a["created_at"]]
    assert min(gaps) >= cfg.cooldown_s
    assert await loop.stack.alerts.active() == []
    await loop.stack.close()


async def test_the_in_memory_readings_close_the_loop_too(tmp_path: Path) -> None:
    loop = await _loop(tmp_path, ph=6.5, source="latest")
    await loop.run(6 * 3600)
    assert 5.9 <= loop.tank.ph <= 6.2 and min(p for _, p, _ in loop.trace) >= 5.9
    await loop.stack.close()


async def test_caps_hold_when_the_tank_needs_more_than_allowed(tmp_path: Path) -> None:
    cfg = replace(DosingConfig(), ph=replace(DosingConfig().ph, hourly_cap_ml=1.5, daily_cap_ml=4.0))
    loop = await _loop(tmp_path, ph=7.5, cfg=cfg)
    await loop.run(12 * 3600)
    doses = [d for d in await _doses(loop) if d["reagent"] == "ph_down"]
    assert _max_window_ml(doses, "ph_down", 3600) <= 1.5 + 1e-9
    assert sum(d["ml"] for d in doses) <= 4.0 + 1e-9 and loop.tank.ph > 6.2  # capped before reaching the target
    # A restart reloads the last 24 h of doses: still capped.
    again = DosingService(loop.stack.db, loop.stack.alerts, loop.stack.commands, loop.zone_state,
                          TelemetryLastSource(loop.stack.db), loop.clock, loop.service._zones, UTC, cfg)
    loop.service = again
    await loop.run(3600)
    assert len([d for d in await _doses(loop) if d["reagent"] == "ph_down"]) == len(doses)
    assert (await loop.stack.alerts.active())[0]["code"] == "biz_high_ph"
    await loop.stack.close()


async def test_ineffective_dosing_stops_with_an_alert_until_reset(tmp_path: Path) -> None:
    loop = await _loop(tmp_path, ph=6.6, broken_doser=True)  # commands go out, nothing reaches the tank
    await loop.run(4 * 3600)
    doses = [d for d in await _doses(loop) if d["reagent"] == "ph_down"]
    assert len(doses) == loop.service.config.max_ineffective
    zone_id = await loop.stack.zone_id("zone-a")
    active = {(a["code"], a["scope"]) for a in await loop.stack.alerts.active()}
    assert ("biz_dosing_ineffective", "ph") in active and ("biz_high_ph", "") in active
    assert loop.service.state("zone-a", Param.PH).halted
    await loop.stack.alerts.resolve("biz_dosing_ineffective", zone_id=zone_id, scope="ph", by="operator")
    await loop.run(120)
    assert len([d for d in await _doses(loop) if d["reagent"] == "ph_down"]) == len(doses) + 1
    await loop.stack.close()


async def test_no_dosing_without_circulation_under_a_lock_or_with_stale_readings(tmp_path: Path) -> None:
    loop = await _loop(tmp_path, ph=6.6)
    zone_id = await loop.stack.zone_id("zone-a")
    loop.zone_state.not_circulating.add(zone_id)
    await loop.run(1800)
    loop.zone_state.not_circulating.clear()
    loop.zone_state.locked_zones.add(zone_id)
    await loop.run(1800)
    loop.sensors_on = False  # the pH node goes quiet; its last reading ages past 5 min
    await loop.run(360)
    loop.zone_state.locked_zones.clear()
    await loop.run(1800)
    assert await _doses(loop) == []
    loop.sensors_on = True
    await loop.run(120)
    assert len(await _doses(loop)) == 1
    await loop.stack.close()


async def test_a_refused_dose_is_not_counted_and_waits(tmp_path: Path) -> None:
    loop = await _loop(tmp_path, ph=6.6)
    await loop.stack.run_dry("zone-a")
    await loop.run(300)
    rows = await loop.stack.db.fetchall("SELECT status, error_code FROM commands WHERE cmd='dose'")
    assert [(r["status"], r["error_code"]) for r in rows] == [("FAILED", "interlock")]
    assert await _doses(loop) == [] and len(await loop.stack.events("COMMAND_REFUSED")) == 1
    await loop.stack.refill("zone-a")
    await loop.run(loop.service.config.cooldown_s + 60)
    assert len(await _doses(loop)) == 1
    await loop.stack.close()


async def test_sim_doser_is_a_node_command_handler() -> None:
    tank = TankSim(capacity_l=100.0, level_pct=100.0, ph=6.5, ec=1.0, noise=False)
    doser = SimDoser(tank)
    ok = await doser.on_command("pump_nutrient_a", {"cmd": "dose", "cmd_id": "c1",
                                                    "params": {"ml": 10, "reagent": "nutrient_a"}})
    bad = await doser.on_command("pump_ph_down", {"cmd": "dose", "params": {"ml": -1, "reagent": "ph_down"}})
    other = await doser.on_command("light", {"cmd": "set_relay", "params": {"on": True}})
    assert ok == {"status": "DONE"} and other == {"status": "DONE"}
    assert bad["status"] == "ERROR" and bad["error_code"] == "bad_params"
    tank.step(1800, {"recirc": True})
    assert tank.ec == pytest.approx(1.0 + 0.2 - 0.005, abs=0.01)  # 10 mL of nutrient in 100 L: +0.2 mS/cm
    assert doser.doses == [("nutrient_a", 10.0)]
