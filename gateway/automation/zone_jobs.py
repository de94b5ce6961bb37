"""Irrigation and light jobs of each zone, from its recipe phase; they only emit commands through CommandService.

Irrigation (misfire ``GRACE``): a run missed by less than the grace time runs once; older misses are
recorded as ``IRRIGATION_SKIPPED`` events (watering hours late could drown or chill the roots).
Lights (misfire ``STATE``): at start and at every on/off time the lamp gets the state the phase wants
*now*, so a light-on missed during downtime is applied at start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time, tzinfo
from typing import Protocol

from gateway.alerts import Alerts
from gateway.automation.recipes import Assignment
from gateway.automation.schedule_plan import LocalTimesTrigger, Misfire
from gateway.automation.schedule_runner import Fire, Job
from gateway.automation.zones import ZoneIds, ZonePlan
from gateway.commands import CommandRefused
from gateway.store.commands import CommandJson

log = logging.getLogger(__name__)

IRRIGATION_CMD = "run_pump"
LIGHT_CMD = "set_relay"


class CommandSubmitter(Protocol):
    """``CommandService.submit`` (every pump start passes the safety interlock there)."""

    async def submit(self, zone_uid: str, channel: str, cmd: str, params: Mapping[str, object] | None = None, *,
                     node_uid: str | None = None, source: str = "api",
                     cmd_id: str | None = None) -> CommandJson:
        """Create and dispatch a command; raises CommandRefused."""
        ...


def _irrigation_times(a: Assignment) -> Callable[[date], Sequence[time]]:
    def times(d: date) -> Sequence[time]:
        phase = a.phase_on(d)
        return [] if phase is None else [r.at for r in phase.irrigation]

    return times


def _light_times(a: Assignment) -> Callable[[date], Sequence[time]]:
    def times(d: date) -> Sequence[time]:
        phase = a.phase_on(d)
        return [] if phase is None or phase.lights is None else [phase.lights.start, phase.lights.end]

    return times


class ZoneJobs:
    """Builds the time-of-day jobs of the zones and executes them."""

    def __init__(self, commands: CommandSubmitter, alerts: Alerts, zone_ids: ZoneIds, tz: tzinfo,
                 irrigation_grace_s: float = 1800.0) -> None:
        self._commands = commands
        self._alerts = alerts
        self._zone_ids = zone_ids
        self._tz = tz
        self._grace = irrigation_grace_s

    def jobs_for(self, zone: ZonePlan) -> list[Job]:
        """The zone's irrigation and light jobs (only for the actuators it has)."""
        a = zone.assignment
        if a is None:
            return []
        jobs: list[Job] = []
        if "irrigation" in zone.actuators:
            trig = LocalTimesTrigger(self._tz, _irrigation_times(a))

            async def irrigate(fire: Fire) -> None:
                await self._irrigate(zone, trig, fire)

            async def skipped(times: Sequence[datetime], now: datetime) -> None:
                await self._skipped(zone, times, now)

            jobs.append(Job(f"irrigation:{zone.uid}", trig, irrigate, Misfire.GRACE, self._grace, skipped))
        if "light" in zone.actuators:

            async def lights(fire: Fire) -> None:
                await self._lights(zone, fire)

            jobs.append(Job(f"lights:{zone.uid}", LocalTimesTrigger(self._tz, _light_times(a)), lights,
                            Misfire.STATE))
        return jobs

    async def _irrigate(self, zone: ZonePlan, trig: LocalTimesTrigger, fire: Fire) -> None:
        assert zone.assignment is not None
        hit = trig.wall_time_of(fire.scheduled)
        phase = zone.assignment.phase_on(hit[0]) if hit else None
        run = next((r for r in phase.irrigation if hit and r.at == hit[1]), None) if phase else None
        if run is None:  # the recipe changed under a pending fire time
            return
        act = zone.actuators["irrigation"]
        zone_id = await self._zone_ids.get(zone.uid)
        details: dict[str, object] = {"scheduled_at": fire.scheduled.isoformat(), "duration_s": run.duration_s,
                                   "phase": phase.name if phase else None, "late_s": round(fire.late_s, 1)}
        try:
            rec = await self._commands.submit(zone.uid, act.channel, IRRIGATION_CMD, {"duration_s": run.duration_s},
                                              node_uid=act.node_uid, source="schedule")
        except CommandRefused as exc:  # the command path already recorded the refusal
            log.warning("irrigation of %s refused: %s", zone.uid, exc.reason)
            return
        await self._alerts.record_event(zone_id, "IRRIGATION", {**details, "cmd_id": rec["cmd_id"]})

    async def _skipped(self, zone: ZonePlan, times: Sequence[datetime], now: datetime) -> None:
        zone_id = await self._zone_ids.get(zone.uid)
        for t in times:
            await self._alerts.record_event(zone_id, "IRRIGATION_SKIPPED", {
                "scheduled_at": t.isoformat(), "late_s": round((now - t).total_seconds()),
                "grace_s": self._grace, "reason": "missed_beyond_grace"})

    async def _lights(self, zone: ZonePlan, fire: Fire) -> None:
        assert zone.assignment is not None
        local = fire.now.astimezone(self._tz)
        phase = zone.assignment.phase_on(local.date())
        want = None if phase is None else phase.lights_on_at(local.time())
        if want is None:
            return
        act = zone.actuators["light"]
        try:
            state = {"state": "ON" if want else "OFF"}
            rec = await self._commands.submit(zone.uid, act.channel, LIGHT_CMD, state, node_uid=act.node_uid,
                                              source="schedule")
        except CommandRefused as exc:
            log.warning("lights of %s refused: %s", zone.uid, exc.reason)
            return
        zone_id = await self._zone_ids.get(zone.uid)
        await self._alerts.record_event(zone_id, "LIGHTS_ON" if want else "LIGHTS_OFF", {
            "cmd_id": rec["cmd_id"], "catch_up": fire.catch_up, "scheduled_at": fire.scheduled.isoformat()})
