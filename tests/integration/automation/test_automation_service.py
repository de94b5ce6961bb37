"""AutomationService as the app runs it: schedules, dosing, aggregation, usage rollup and periodic jobs together."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.automation.config import automation_config_from_dict
from gateway.automation.recipes import RecipeError, recipes_from_mapping
from gateway.automation.service import AutomationService
from gateway.clock import ManualClock
from gateway.prometheus import Metrics
from gateway.settings import ActuatorRef, NodeConfig, ZoneConfig
from tests.integration.automation.stack import FakeZoneState, Recorder, advance_settled, open_stack, parked, settle

TZ = "Europe/Berlin"
RECIPES = {"basil": {"phases": [{
    "start_day": 0, "ph": {"min": 5.8, "max": 6.2}, "ec": {"min": 1.2, "max": 1.6},
    "irrigation": {"times": "08:00", "duration_s": 45}, "lights": {"on": "06:00", "off": "22:00"}}]}}
NODES = [NodeConfig(hardware_id="esp-1", uid="nd-1", zone="zone-a", node_type="pump")]
ZONES = [ZoneConfig(uid="zone-a", recipe="basil", recipe_start="2026-03-01", actuators={
    "irrigation": ActuatorRef(channel="pump_irr", node_uid="nd-1"),
    "light": ActuatorRef(channel="light", node_uid="nd-1"),
    "ph_down": ActuatorRef(channel="dose_ph", node_uid="nd-1")}), ZoneConfig(uid="zone-b")]


def _wall(hh: int) -> float:
    return datetime.combine(date(2026, 3, 28), time(hh), ZoneInfo(TZ)).timestamp()


async def test_the_service_runs_everything_on_one_clock(tmp_path: Path) -> None:
    clock = ManualClock(start_wall=_wall(5))
    stack = await open_stack(tmp_path / "gw.db", ZONES, NODES, clock=clock)
    rec: Recorder = stack.publish
    cfg = automation_config_from_dict({"aggregate_interval_s": 300, "usage_rollup_interval_s": 600})
    metrics = Metrics()
    service = AutomationService(stack.db, stack.alerts, stack.commands, FakeZoneState(), clock, zones=ZONES,
                                recipes=recipes_from_mapping(RECIPES), timezone=TZ, config=cfg, metrics=metrics)
    assert service.scheduler.job_ids() == ["irrigation:zone-a", "lights:zone-a"]
    recirc_ticks: list[float] = []

    async def recirc_tick() -> None:  # what the lead registers for the water layer
        recirc_ticks.append(clock.monotonic())

    service.register_periodic("recirc_tick", recirc_tick, 5.0)
    zone_id = await stack.zone_id("zone-a")
    node = stack.registry.get("nd-1")
    assert node is not None
    now = clock.time()
    await stack.db.execute(
        "INSERT INTO telemetry_samples(zone_id, node_id, metric_type, value, ts, received_at, ts_source,"
        " clock_synced) VALUES (?,?,?,?,?,?, 'node', 1)", (zone_id, node.id, "ph", 6.6, now, now))
    await stack.db.execute(
        "INSERT INTO telemetry_last(zone_id, node_id, metric_type, value, ts, received_at) VALUES (?,?,?,?,?,?)",
        (zone_id, node.id, "ph", 6.6, now, now))
    await stack.db.execute(
        "INSERT INTO water_usage_logs(zone_id, pump_channel, volume_l, duration_ms, started_at, finished_at)"
        " VALUES (?,?,?,?,?,?)", (zone_id, "pump_irr", 2.5, 45_000, now - 600, now - 555))
    task = asyncio.create_task(service.run())
    try:
        await settle(parked(service.scheduler, clock))
        await advance_settled(clock, 4 * 3600, 60, parked(service.scheduler, clock))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    berlin = ZoneInfo(TZ)
    cmds = [(datetime.fromtimestamp(b["ts"], berlin).strftime("%H:%M"), b["cmd"], b["params"])
            for _, b in rec.commands()]
    assert [c for c in cmds if c[1] == "set_relay"] == [("05:00", "set_relay", {"state": "OFF"}),
                                                        ("06:00", "set_relay", {"state": "ON"})]
    assert [c for c in cmds if c[1] == "run_pump"] == [("08:00", "run_pump", {"duration_s": 45.0})]
    # The pH reading (6.6) is fresh for the first ticks only: one dose, then no fresh data, no more doses.
    doses = [c for c in cmds if c[1] == "dose"]
    assert doses == [("05:01", "dose", {"ml": 5.0, "reagent": "ph_down"})]
    agg = await stack.db.fetchone("SELECT count FROM telemetry_agg_1m")
    usage = await stack.db.fetchone("SELECT total_volume_l, irrigation_count FROM water_usage_daily")
    assert agg is not None and agg["count"] == 1
    assert usage is not None and tuple(usage) == (2.5, 1)
    assert len(recirc_ticks) == 4 * 60  # every 5 s, so once per 60 s step of the manual clock
    # What the operator's Prometheus sees of it.
    sample = metrics.registry.get_sample_value
    assert sample("hydro_dosing_doses_total", {"zone": "zone-a", "reagent": "ph_down"}) == 1
    assert sample("hydro_dosing_volume_millilitres_total", {"zone": "zone-a", "reagent": "ph_down"}) == 5.0
    assert sample("hydro_schedule_runs_total", {"job": "lights:zone-a"}) == 2  # reconcile at 05:00, on at 06:00
    assert sample("hydro_schedule_runs_total", {"job": "irrigation:zone-a"}) == 1
    assert sample("hydro_aggregation_samples_total") == 1
    assert sample("hydro_aggregation_last_run_timestamp_seconds") == pytest.approx(clock.time(), abs=300)
    await stack.close()


async def test_invalid_recipes_refuse_to_build_and_a_bad_reload_keeps_the_old_jobs(tmp_path: Path) -> None:
    stack = await open_stack(tmp_path / "gw.db", ZONES, NODES)
    bad = {"basil": {"phases": [{"start_day": 0, "irrigation": {"times": "25:00", "duration_s": 10}}]}}
    with pytest.raises(RecipeError, match=r"recipes\.basil\.phases\.0\.irrigation\.times"):
        AutomationService(stack.db, stack.alerts, stack.commands, FakeZoneState(), stack.clock, zones=ZONES,
                          recipes=recipes_from_mapping(bad), timezone=TZ)
    service = AutomationService(stack.db, stack.alerts, stack.commands, FakeZoneState(), stack.clock, zones=ZONES,
                                recipes=recipes_from_mapping(RECIPES), timezone=TZ)
    with pytest.raises(RecipeError):
        service.apply_config(ZONES, recipes_from_mapping(bad))
    assert service.scheduler.job_ids() == ["irrigation:zone-a", "lights:zone-a"]
    no_lights = {"basil": {"phases": [{"start_day": 0, "irrigation": {"times": "09:00", "duration_s": 10}}]}}
    service.apply_config(ZONES, recipes_from_mapping(no_lights))
    assert service.scheduler.job_ids() == ["irrigation:zone-a", "lights:zone-a"]  # light job: no times
    service.apply_config([ZoneConfig(uid="zone-a")], {})
    assert service.scheduler.job_ids() == []
    await stack.close()
