"""Schedules on a manual clock with real SQLite and CommandService: local times over DST, misfire after downtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.automation.recipes import recipes_from_mapping
from gateway.automation.schedule_plan import LocalTimesTrigger
from gateway.automation.schedule_runner import Fire, Job, Scheduler
from gateway.automation.zone_jobs import ZoneJobs
from gateway.automation.zones import ZoneIds, zone_plans
from gateway.clock import ManualClock, SystemClock
from gateway.prometheus import Metrics
from gateway.settings import ActuatorRef, NodeConfig, ZoneConfig
from tests.integration.automation.stack import Recorder, Stack, advance_settled, open_stack, parked, settle

BERLIN = ZoneInfo("Europe/Berlin")
NODES = [NodeConfig(hardware_id="esp-1", uid="nd-irr", zone="zone-a", node_type="pump")]


def _recipe(times: str, lights: tuple[str, str] | None = ("06:00", "22:00")) -> dict[str, Any]:
    phase: dict[str, Any] = {"start_day": 0, "irrigation": {"times": times, "duration_s": 60}}
    if lights:
        phase["lights"] = {"on": lights[0], "off": lights[1]}
    return {"phases": [phase]}


def _zone() -> ZoneConfig:
    return ZoneConfig(uid="zone-a", recipe="r", recipe_start="2026-01-01", actuators={
        "irrigation": ActuatorRef(channel="pump_irr", node_uid="nd-irr"),
        "light": ActuatorRef(channel="light_main", node_uid="nd-irr")})


def _wall(d: date, hh: int, mm: int = 0) -> float:
    return datetime.combine(d, time(hh, mm), BERLIN).timestamp()


async def _stack(tmp_path: Path, start: float) -> Stack:
    return await open_stack(tmp_path / "gw.db", [_zone()], NODES, clock=ManualClock(start_wall=start))


def _scheduler(stack: Stack, recipe: dict[str, Any], grace_s: float = 1800.0,
               metrics: Metrics | None = None) -> Scheduler:
    sched = Scheduler(stack.db, stack.clock, driver="clock", max_sleep_s=3600, metrics=metrics)
    jobs = ZoneJobs(stack.commands, stack.alerts, ZoneIds(stack.db), BERLIN, grace_s)
    for job in jobs.jobs_for(zone_plans([_zone()], recipes_from_mapping({"r": recipe}))[0]):
        sched.add(job)
    return sched


@contextlib.asynccontextmanager
async def _running(sched: Scheduler, clock: Any) -> AsyncIterator[None]:
    task = asyncio.create_task(sched.run())
    await settle(parked(sched, clock))  # the catch-up at start is done
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _local(cmds: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [datetime.fromtimestamp(b["ts"], BERLIN).strftime("%m-%d %H:%M") for _, b in cmds]


async def test_irrigation_and_lights_follow_local_time_through_spring_forward(tmp_path: Path) -> None:
    stack = await _stack(tmp_path, _wall(date(2026, 3, 28), 0))
    rec: Recorder = stack.publish
    sched = _scheduler(stack, _recipe("08:00,18:00"))
    assert isinstance(stack.clock, ManualClock)
    async with _running(sched, stack.clock):
        await advance_settled(stack.clock, 3 * 86_400 - 120, 60, parked(sched, stack.clock))
    assert _local(rec.commands("run_pump")) == ["03-28 08:00", "03-28 18:00", "03-29 08:00", "03-29 18:00",
                                               "03-30 08:00", "03-30 18:00"]
    lights = [(when, b["params"]["state"] == "ON") for when, (_, b) in zip(_local(rec.commands("set_relay")),
                                                                 rec.commands("set_relay"), strict=True)]
    # At start (00:00) the lamp is set to what the phase wants now: off.
    assert lights == [("03-28 00:00", False), ("03-28 06:00", True), ("03-28 22:00", False),
                      ("03-29 06:00", True), ("03-29 22:00", False), ("03-30 06:00", True), ("03-30 22:00", False)]
    topic, body = rec.commands("run_pump")[0]
    assert topic == "hydro/gh1/zone-a/nd-irr/pump_irr/command" and body["params"] == {"duration_s": 60.0}
    irrigations = await stack.events("IRRIGATION")
    assert len(irrigations) == 6 and irrigations[0]["details"]["late_s"] == 0
    await stack.close()


async def test_fall_back_night_irrigates_once(tmp_path: Path) -> None:
    stack = await _stack(tmp_path, _wall(date(2026, 10, 24), 12))
    rec: Recorder = stack.publish
    sched = _scheduler(stack, _recipe("02:30", lights=None))
    assert isinstance(stack.clock, ManualClock)
    async with _running(sched, stack.clock):
        await advance_settled(stack.clock, 2 * 86_400, 60, parked(sched, stack.clock))
    runs = [datetime.fromtimestamp(b["ts"], BERLIN).isoformat(timespec="minutes") for _, b in rec.commands()]
    assert runs == ["2026-10-25T02:30+02:00", "2026-10-26T02:30+01:00"]
    await stack.close()


async def test_after_downtime_lights_are_applied_and_old_irrigation_is_skipped(tmp_path: Path) -> None:
    day = date(2026, 5, 4)
    stack = await _stack(tmp_path, _wall(day, 7))
    clock = stack.clock
    assert isinstance(clock, ManualClock)
    rec: Recorder = stack.publish
    recipe = _recipe("08:00,12:00,12:05", lights=("07:30", "22:00"))
    sched = _scheduler(stack, recipe)
    async with _running(sched, clock):
        await advance_settled(clock, 20 * 60, 60, parked(sched, clock))  # up until 07:20, lights off
    assert [b["params"] for _, b in rec.commands()] == [{"state": "OFF"}]
    await clock.advance(4 * 3600 + 50 * 60)  # gateway down until 12:10: missed 07:30 on, 08:00, 12:00, 12:05
    rec.messages.clear()
    metrics = Metrics()
    sched = _scheduler(stack, recipe, metrics=metrics)  # a new process: last runs come from kv_state
    async with _running(sched, clock):
        await advance_settled(clock, 60, 60, parked(sched, clock))
    assert metrics.registry.get_sample_value("hydro_schedule_skipped_runs_total", {"job": "irrigation:zone-a"}) == 1
    assert metrics.registry.get_sample_value("hydro_schedule_runs_total", {"job": "irrigation:zone-a"}) == 1
    assert [(b["cmd"], b["params"]) for _, b in rec.commands()] == [
        ("run_pump", {"duration_s": 60.0}), ("set_relay", {"state": "ON"})]
    irrigation = (await stack.events("IRRIGATION"))[-1]["details"]
    assert irrigation["scheduled_at"].startswith("2026-05-04T12:05") and irrigation["late_s"] >= 300
    skipped = [e["details"]["scheduled_at"][:16] for e in await stack.events("IRRIGATION_SKIPPED")]
    assert skipped == ["2026-05-04T08:00"]  # 12:00 was within grace: coalesced into the 12:05 run
    lights_on = (await stack.events("LIGHTS_ON"))[-1]["details"]
    assert lights_on["catch_up"] is True
    # Another restart right away repeats nothing but the state reconcile of the lamp.
    rec.messages.clear()
    sched = _scheduler(stack, recipe)
    async with _running(sched, clock):
        await advance_settled(clock, 60, 60, parked(sched, clock))
    assert [(b["cmd"], b["params"]) for _, b in rec.commands()] == [("set_relay", {"state": "ON"})]
    await stack.close()


async def test_refused_irrigation_is_recorded_and_the_schedule_goes_on(tmp_path: Path) -> None:
    day = date(2026, 6, 1)
    stack = await _stack(tmp_path, _wall(day, 7))
    clock = stack.clock
    assert isinstance(clock, ManualClock)
    await stack.run_dry("zone-a")
    sched = _scheduler(stack, _recipe("08:00,09:00", lights=None))
    async with _running(sched, clock):
        await advance_settled(clock, 3600 + 60, 60, parked(sched, clock))
        await stack.refill("zone-a")
        await advance_settled(clock, 3600, 60, parked(sched, clock))
    rows = await stack.db.fetchall("SELECT status, error_code FROM commands WHERE cmd='run_pump' ORDER BY id")
    assert [(r["status"], r["error_code"]) for r in rows] == [("FAILED", "interlock"), ("SENT", None)]
    refused = await stack.events("COMMAND_REFUSED")
    assert refused[0]["details"]["reason"] == "dry_run"
    assert len(await stack.events("IRRIGATION")) == 1
    await stack.close()


async def test_periodic_jobs_run_on_monotonic_time_despite_wall_clock_jumps(tmp_path: Path) -> None:
    stack = await _stack(tmp_path, _wall(date(2026, 6, 1), 7))
    clock = stack.clock
    assert isinstance(clock, ManualClock)
    sched = Scheduler(stack.db, clock, driver="clock")
    ticks: list[float] = []

    async def tick() -> None:
        ticks.append(clock.monotonic())

    sched.register_periodic("recirc", tick, 10.0, run_at_start=True)
    async with _running(sched, stack.clock):
        await clock.advance(25, step=1)
        clock.set_wall(clock.time() - 86_400)  # NTP steps the wall clock back a day
        await clock.advance(20, step=1)
        sched.register_periodic("late", tick, 100.0, run_at_start=True)  # added while running
        await clock.advance(1, step=1)
    assert len(ticks) == 6  # t=0,10,20,30,40 and the late one
    await stack.close()


async def test_apscheduler_driver_fires_in_real_time(tmp_path: Path) -> None:
    stack = await open_stack(tmp_path / "gw.db", [_zone()], NODES, clock=SystemClock())
    sched = Scheduler(stack.db, stack.clock)
    assert sched.driver == "apscheduler"
    fired: list[Fire] = []
    at = datetime.now(UTC) + timedelta(seconds=0.3)

    async def action(fire: Fire) -> None:
        fired.append(fire)

    sched.add(Job("soon", LocalTimesTrigger(UTC, lambda d: [at.time()] if d == at.date() else []), action))
    task = asyncio.create_task(sched.run())
    try:
        for _ in range(300):
            if fired:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(fired) == 1 and fired[0].scheduled == at and 0 <= fired[0].late_s < 1.0
    row = await stack.db.fetchone("SELECT value FROM kv_state WHERE key='schedule:last_run:soon'")
    assert row is not None and at.isoformat()[:19] in row["value"]
    await stack.close()
