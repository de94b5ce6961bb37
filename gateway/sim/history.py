"""A simulated past for the demo: days of readings from the tank model, with doses and a water change.

A fresh demo would otherwise show a sliver of data at the right edge of every chart. The history is written
once, before the simulated nodes start, into ``telemetry_samples`` (``ts_source = 'simulated'``) and as zone
events marked ``"simulated": true``; a ``SIMULATED_HISTORY`` event says where the simulated past ends, and the
pages show it. Deterministic for a seed; the live tank is not touched.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from gateway.sim.tank import TankSim
from gateway.store import events, samples, water
from gateway.store.events import EventValues
from gateway.store.samples import SampleValues
from gateway.store.water import RunValues
from gateway.water.cycle import WaterPhase

if TYPE_CHECKING:
    from gateway.sim.wiring import SimServices

log = logging.getLogger(__name__)

STEP_S = 60.0  # physics step
SAMPLE_S = 300.0  # one stored reading per metric every 5 minutes (like a node on a slow schedule)
METRICS = ("ph", "ec", "temp_water", "temp_air", "humidity", "co2", "lux", "water_level", "flow_rate")
# The simulated past has no real node (the demo's nodes register only when they say hello): node id 0 keeps it
# a series of its own in the aggregates, while the charts, which draw per zone and metric, show it with the rest.
SIM_NODE_ID = 0


@dataclass
class ZoneHistory:
    """What the generator needs of one zone: ids, its pH/EC targets and the simulated tank."""

    zone_id: int
    short: str
    ph: tuple[float, float]
    ec: tuple[float, float]
    samples: list[SampleValues] = field(default_factory=list)
    events: list[EventValues] = field(default_factory=list)
    runs: list[RunValues] = field(default_factory=list)  # water_usage_logs rows: one per pump run
    solution_made_at: float | None = None  # end of the simulated water change
    ec_at_start: float | None = None

    def run(self, role: str, on_at: float, off_at: float, flow_l_min: float) -> None:
        """Record one finished pump run (the status page draws them as the activity strip)."""
        minutes = (off_at - on_at) / 60
        details = json.dumps({"simulated": True, "source": "nominal"})
        self.runs.append((self.zone_id, f"{self.short}-{role}", round(flow_l_min * minutes, 2),
                          int((off_at - on_at) * 1000), flow_l_min, details, on_at, off_at))


def _event(z: ZoneHistory, kind: str, details: dict[str, object], at: float) -> None:
    z.events.append((z.zone_id, kind, json.dumps({**details, "simulated": True}), at))


def simulate_zone(z: ZoneHistory, start: float, end: float, tz: ZoneInfo, seed: int) -> None:
    """Run the tank model from ``start`` to ``end`` with a simple controller; fill ``z.samples``/``z.events``."""
    local_start = datetime.fromtimestamp(start, tz)
    tank = TankSim(capacity_l=100.0, level_pct=82.0, ph=6.0, ec=1.6, seed=seed,
                   time_of_day_s=local_start.hour * 3600 + local_start.minute * 60)
    # One water change, three days before the end, at 09:00 local.
    change_day = (datetime.fromtimestamp(end, tz) - timedelta(days=3)).date()
    change_at = datetime.combine(change_day, datetime.min.time(), tzinfo=tz).replace(hour=9).timestamp()
    phase = "recirc"  # recirc → drain → fill → recirc
    phase_since = start
    change_started = 0.0
    next_dose_at = start
    t = start
    next_sample = start
    while t < end:
        pumps = {"recirc": phase == "recirc", "drain": phase == "drain", "fill": phase == "fill"}
        doses: dict[str, float] = {}
        if phase == "recirc" and t >= change_at and change_started == 0.0:
            z.run("recirc", phase_since, t, 12.0)
            phase, change_started, phase_since = "drain", t, t
            _event(z, "WATER_CHANGE_STARTED", {"trigger": "schedule", "water_level": round(tank.level_pct, 1),
                                               "ec": round(tank.ec, 2)}, t)
        elif phase == "drain" and tank.level_pct <= 10.0:
            z.run("drain", phase_since, t, 10.0)
            phase, phase_since = "fill", t
            _event(z, "WATER_CHANGE_PHASE", {"from": "WATER_CHANGE_DRAIN", "to": "WATER_CHANGE_FILL"}, t)
        elif phase == "fill" and tank.level_pct >= 85.0:
            z.run("fill", phase_since, t, 10.0)
            phase, phase_since = "recirc", t
            z.solution_made_at, z.ec_at_start = t, (z.ec[0] + z.ec[1]) / 2
            # The fresh solution gets its nutrients at once (the operator's stock mix).
            doses["nutrient"] = ((z.ec[0] + z.ec[1]) / 2 - tank.ec) * 50.0 * tank.volume_l / 100
            _event(z, "WATER_CHANGE_COMPLETED", {"trigger": "schedule", "duration_s": t - change_started,
                                                 "water_level": round(tank.level_pct, 1)}, t)
        elif phase == "recirc" and t >= next_dose_at:
            mid_ph = (z.ph[0] + z.ph[1]) / 2
            if tank.ph > z.ph[1] - 0.05:
                ml = round(max(0.5, (tank.ph - mid_ph) * 10.0 * tank.volume_l / 100), 1)
                doses["ph_down"] = ml
                _event(z, "DOSE", {"parameter": "ph", "reagent": "ph_down", "ml": ml, "value": round(tank.ph, 2),
                                   "target": mid_ph}, t)
                next_dose_at = t + 1800
            elif tank.ec < z.ec[0] + 0.05:
                mid_ec = (z.ec[0] + z.ec[1]) / 2
                ml = round(min(20.0, (mid_ec - tank.ec) * 50.0 * tank.volume_l / 100), 1)
                doses["nutrient"] = ml
                _event(z, "DOSE", {"parameter": "ec", "reagent": "nutrient_a", "ml": ml, "value": round(tank.ec, 2),
                                   "target": mid_ec}, t)
                next_dose_at = t + 1800
        tank.step(STEP_S, pumps, {k: max(0.0, v) for k, v in doses.items()})
        t += STEP_S
        if t >= next_sample:
            next_sample += SAMPLE_S
            _sample(z, tank, t, tz)
    if phase == "recirc":
        z.run("recirc", phase_since, end, 12.0)  # the live gateway takes the pump over from here


def _sample(z: ZoneHistory, tank: TankSim, t: float, tz: ZoneInfo) -> None:
    readings = tank.readings("recirc")
    hour = datetime.fromtimestamp(t, tz).hour + datetime.fromtimestamp(t, tz).minute / 60
    daily = math.sin(math.pi * (hour - 9) / 12)  # warmest mid-afternoon
    readings["temp_air"] = round(float(readings["temp_air"] or 0) + 3.0 * daily, 2)
    readings["temp_water"] = round(float(readings["temp_water"] or 0) + 0.8 * daily, 2)
    readings["humidity"] = round(float(readings["humidity"] or 0) - 8.0 * daily, 1)
    for metric in METRICS:
        value = readings.get(metric)
        if value is not None:
            z.samples.append((z.zone_id, SIM_NODE_ID, metric, None, float(value), t, t, "simulated", 1, None))


def _write(conn: sqlite3.Connection, zones: list[ZoneHistory]) -> int:
    rows = 0
    for z in zones:
        samples.insert_samples(conn, z.samples)
        events.insert_unsynced(conn, z.events)
        water.insert_runs(conn, z.runs)
        rows += len(z.samples)
    return rows


async def _adopt_solution_age(
    gw: SimServices, histories: list[ZoneHistory], zones: list[tuple[str, str]], now: float
) -> None:
    """The water machine's solution age follows the simulated water change, so the page tells one story."""
    by_id = {gw.registry.zone_id(uid): uid for uid, _ in zones}
    for z in histories:
        uid = by_id.get(z.zone_id)
        zw = gw.water.zones.get(uid) if uid is not None else None
        if zw is None or z.solution_made_at is None or zw.state.phase is not WaterPhase.NORMAL_RECIRC:
            continue
        zw.state = replace(zw.state, solution_started_at=z.solution_made_at, ec_at_start=z.ec_at_start,
                           phase_started_at_wall=z.solution_made_at)
        # The water service keeps its state under this key (WaterService._persist); a restart keeps the story.
        await gw.db.put_state(f"water.{zw.zone_uid}", zw.state.to_dict(), now)


async def write_history(gw: SimServices, zones: list[tuple[str, str]], days: float = 7.0) -> float | None:
    """Write ``days`` of simulated history for each (zone uid, short name) unless the database has a past already.

    Returns the end of the simulated past (wall seconds), or None when nothing was written.
    """
    now = gw.clock.time()
    if await samples.has_samples_before(gw.db, now - 3600):
        return None  # a restarted demo keeps the past it has
    tz = ZoneInfo(gw.settings.gateway.timezone)
    recipes = {p.uid: p.assignment for p in gw.automation.plans}
    end = now - 60.0  # the live readings take over from here
    histories = []
    for seed, (uid, short) in enumerate(zones):
        zone_id = gw.registry.zone_id(uid)
        if zone_id is None:
            continue
        a = recipes.get(uid)
        phase = a.phase_on(datetime.fromtimestamp(now, tz).date()) if a is not None else None
        ph = (phase.day.ph.low, phase.day.ph.high) if phase is not None and phase.day.ph else (5.8, 6.2)
        ec = (phase.day.ec.low, phase.day.ec.high) if phase is not None and phase.day.ec else (1.4, 1.8)
        z = ZoneHistory(zone_id, short, ph, ec)
        simulate_zone(z, end - days * 86400, end, tz, seed=100 + seed)
        histories.append(z)
        marker = {"days": days, "until": end, "simulated": True}
        z.events.append((zone_id, "SIMULATED_HISTORY", json.dumps(marker), end))
    rows = await gw.db.in_thread_transaction(lambda conn: _write(conn, histories))
    await _adopt_solution_age(gw, histories, zones, now)
    await gw.db.put_state("demo_simulated_until", end, now)
    log.info("demo: wrote %d simulated readings (%g days before %s) and their events", rows, days,
             datetime.fromtimestamp(end, tz).strftime("%Y-%m-%d %H:%M"))
    return end
