"""The async shell of the pH/EC controller: readings in, dose commands out through CommandService.

Each tick, per zone with a recipe phase and per parameter: read the newest fresh value, run
``dosing.step`` and carry out its actions (``dose`` commands with ``{"ml", "reagent"}``, ``DOSE`` zone
events, ``dosing_log`` rows, alerts). Controller state and dose history are persisted so mixing delays,
cooldowns, caps and a halted doser survive a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Protocol

from gateway.alerts import Alerts
from gateway.automation.dosing import (
    Capped,
    Dose,
    DoseRecord,
    DosingConfig,
    Inputs,
    Param,
    ParamState,
    RaiseAlert,
    ResolveAlert,
    Sample,
    dosed,
    operator_reset,
    refused,
    step,
)
from gateway.automation.zone_jobs import CommandSubmitter
from gateway.automation.zones import ZoneIds, ZonePlan, ZoneState
from gateway.clock import Clock
from gateway.commands import CommandRefused
from gateway.prometheus import Metrics
from gateway.readings import LatestReadings
from gateway.store import dosing as dosing_store
from gateway.store import kv, samples
from gateway.store.db import Database
from gateway.telemetry_metrics import Metric

log = logging.getLogger(__name__)

DOSING_ROLES = frozenset({"ph_down", "ph_up", "nutrient_a", "nutrient_b"})
_KV_PREFIX = "dosing:"


class ReadingSource(Protocol):
    """Where the controller gets the newest reading of a zone's metric."""

    async def latest(self, zone_id: int, metric: Metric) -> Sample | None:
        """Newest value with its receive time (wall seconds), or None."""
        ...


class TelemetryLastSource:
    """Newest row of ``telemetry_last`` for the zone and metric (any node)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def latest(self, zone_id: int, metric: Metric) -> Sample | None:
        """Newest value by receive time."""
        row = await samples.newest_of_zone(self._db, zone_id, metric.value)
        return None if row is None else Sample(row.value, row.received_at)


class LatestReadingsSource:
    """The in-memory ``LatestReadings`` (monotonic receive times mapped to wall time)."""

    def __init__(self, latest: LatestReadings, clock: Clock) -> None:
        self._latest = latest
        self._clock = clock

    async def latest(self, zone_id: int, metric: Metric) -> Sample | None:
        """Newest value; its age comes from the monotonic clock."""
        r = self._latest.get(zone_id, metric)
        if r is None:
            return None
        return Sample(r.value, self._clock.time() - (self._clock.monotonic() - r.taken_mono))


class DosingService:
    """Runs the pH/EC controllers of every zone."""

    def __init__(self, db: Database, alerts: Alerts, commands: CommandSubmitter, zone_state: ZoneState,
                 readings: ReadingSource, clock: Clock, zones: Sequence[ZonePlan], tz: tzinfo,
                 config: DosingConfig | None = None, metrics: Metrics | None = None) -> None:
        self._db = db
        self._metrics = metrics or Metrics()  # a private registry when the app does not export one
        self._alerts = alerts
        self._commands = commands
        self._zone_state = zone_state
        self._readings = readings
        self._clock = clock
        self._zones = list(zones)
        self._tz = tz
        self.config = config or DosingConfig()
        self._zone_ids = ZoneIds(db)
        self._states: dict[tuple[str, Param], ParamState] = {}
        self._history: dict[int, list[DoseRecord]] = {}
        self._loaded = False

    def set_zones(self, zones: Sequence[ZonePlan]) -> None:
        """Replace the zones (new config); controller memory of kept zones stays."""
        self._zones = list(zones)

    async def load(self) -> None:
        """Restore controller states and the last 24 h of doses."""
        since = self._clock.time() - 86_400.0
        self._history = {}
        for dose in await dosing_store.doses_since(self._db, since):
            self._history.setdefault(dose.zone_id, []).append(DoseRecord(dose.reagent, dose.ml, dose.created_at))
        for key, saved in (await kv.with_prefix(self._db, _KV_PREFIX)).items():
            _, zone_uid, param = key.split(":", 2)
            if param in Param.__members__.values() and isinstance(saved, dict):
                self._states[(zone_uid, Param(param))] = ParamState.from_dict(saved)
        self._loaded = True

    def state(self, zone_uid: str, param: Param) -> ParamState:
        """The controller state of one zone and parameter."""
        return self._states.get((zone_uid, param), ParamState())

    def history(self, zone_id: int) -> list[DoseRecord]:
        """Doses of the last 24 h."""
        return list(self._history.get(zone_id, []))

    async def run(self, interval_s: float = 15.0) -> None:
        """Tick forever."""
        while True:
            await self.tick()
            await self._clock.sleep(interval_s)

    async def tick(self) -> None:
        """One pass over every zone and parameter."""
        if not self._loaded:
            await self.load()
        now = self._clock.time()
        local = datetime.fromtimestamp(now, self._tz)
        for zone in self._zones:
            zone_id = await self._zone_ids.get(zone.uid)
            if zone_id is None or zone.assignment is None:
                continue
            history = self._history.setdefault(zone_id, [])
            history[:] = [r for r in history if r.at >= now - 86_400.0]
            targets = zone.assignment.targets_at(local.date(), local.time())
            reagents = frozenset(zone.actuators) & DOSING_ROLES
            for param, target in ((Param.PH, targets.ph), (Param.EC, targets.ec)):
                await self._tick_param(zone, zone_id, param, Inputs(
                    now=now, sample=await self._readings.latest(zone_id, Metric(param.value)), target=target,
                    circulating=self._zone_state.circulating(zone_id), locked=self._zone_state.locked(zone_id),
                    reagents=reagents, tank_volume_l=zone.tank_volume_l, history=tuple(history)))

    async def _tick_param(self, zone: ZonePlan, zone_id: int, param: Param, inp: Inputs) -> None:
        old = self.state(zone.uid, param)
        state = old
        if state.halted and not await self._alert_active(zone_id, param):
            state = operator_reset(state)
            log.info("dosing %s/%s re-enabled after operator reset", zone.uid, param.value)
        state, actions = step(param, state, inp, self.config)
        for action in actions:
            if isinstance(action, Dose):
                state = await self._dose(zone, zone_id, param, state, action, inp.now)
            elif isinstance(action, RaiseAlert):
                await self._alerts.raise_alert(action.code, zone_id=zone_id,
                                               scope=param.value if action.code == "biz_dosing_ineffective" else "",
                                               details=action.details)
            elif isinstance(action, ResolveAlert):
                await self._alerts.resolve(action.code, zone_id=zone_id)
            elif isinstance(action, Capped):
                self._metrics.dosing_capped.labels(zone=zone.uid, parameter=param.value).inc()
                log.info("dosing %s/%s capped: %s wanted %.2f mL", zone.uid, param.value, action.reagent,
                         action.wanted_ml)
        if state != old:
            self._states[(zone.uid, param)] = state
            await self._db.put_state(f"{_KV_PREFIX}{zone.uid}:{param.value}", state.to_dict(), self._clock.time())

    async def _alert_active(self, zone_id: int, param: Param) -> bool:
        return await self._alerts.is_active(zone_id, "biz_dosing_ineffective", param.value)

    async def _dose(self, zone: ZonePlan, zone_id: int, param: Param, state: ParamState, dose: Dose,
                    now: float) -> ParamState:
        sent: list[dict[str, object]] = []
        for reagent, ml in dose.doses:
            act = zone.actuators[reagent]
            params: dict[str, object] = {"ml": ml, "reagent": reagent}
            if act.ml_per_s:
                params["duration_s"] = round(ml / act.ml_per_s, 2)
            try:
                rec = await self._commands.submit(zone.uid, act.channel, "dose", params, node_uid=act.node_uid,
                                                  source="automation")
            except CommandRefused as exc:
                log.warning("dose %s %.2f mL on %s refused: %s", reagent, ml, zone.uid, exc.reason)
                self._metrics.dosing_refused.labels(zone=zone.uid, parameter=param.value).inc()
                break
            self._metrics.dosing_doses.labels(zone=zone.uid, reagent=reagent).inc()
            self._metrics.dosing_volume_ml.labels(zone=zone.uid, reagent=reagent).inc(ml)
            sent.append({"reagent": reagent, "ml": ml, "cmd_id": rec["cmd_id"]})
            await dosing_store.log_dose(self._db, zone_id, param.value, reagent, ml, rec["cmd_id"], dose.value,
                                        dose.target, now)
            self._history.setdefault(zone_id, []).append(DoseRecord(reagent, ml, now))
            await self._alerts.record_event(zone_id, "DOSE", {
                "parameter": param.value, "reagent": reagent, "ml": ml, "value": dose.value, "target": dose.target,
                "cmd_id": rec["cmd_id"]})
        if not sent:
            return refused(state, now, self.config)
        return dosed(state, dose, now)
