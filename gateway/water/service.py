"""The async shell of the water model: per zone, the water-change machine and NC recirculation.

Ticked once a second by the automation scheduler; every pump switch goes through the safety gate (the
interlock for starts; NC recirculation OFF only on a bounded lease). The machine's state is persisted in
``kv_state`` so a restart resumes safely (``cycle.resume``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.alerts import Alerts
from gateway.clock import Clock
from gateway.jsonvalue import as_mapping
from gateway.ratelog import RateLimitedLog
from gateway.readings import LatestReadings
from gateway.safety.gate import SafetyGate
from gateway.safety.rules import RaiseAlert, ResolveAlert
from gateway.store.db import Database
from gateway.telemetry_metrics import Metric
from gateway.water.config import WaterChangeConfig, WaterCycleConfig
from gateway.water.cycle import (
    OperatorRequest,
    PersistState,
    RecordEvent,
    SetPump,
    WaterAction,
    WaterEvent,
    WaterInputs,
    WaterPhase,
    WaterState,
    resume,
    step,
)
from gateway.water.recirc import RecircDecision, RecircState, decide_recirc

log = logging.getLogger(__name__)


@dataclass
class ZoneWater:
    """One zone's water machine, recirc state and pending operator requests."""

    zone_id: int
    zone_uid: str
    cfg: WaterCycleConfig
    state: WaterState = field(default_factory=WaterState)
    recirc: RecircState = field(default_factory=RecircState)
    requests: set[OperatorRequest] = field(default_factory=set)
    requested_by: dict[WaterEvent, str] = field(default_factory=dict)


class WaterService:
    """Drives water changes and recirculation for every zone with a ``water_cycle`` config."""

    def __init__(
        self,
        zones: Mapping[str, tuple[int, WaterCycleConfig | None]],
        gate: SafetyGate,
        db: Database,
        alerts: Alerts,
        latest: LatestReadings,
        clock: Clock,
        timezone: str,
        tick_s: float = 1.0,
    ) -> None:
        self._gate = gate
        self._ratelog = RateLimitedLog(log, 60.0, clock.monotonic)
        self._db = db
        self._alerts = alerts
        self._latest = latest
        self._clock = clock
        self._tz = ZoneInfo(timezone)
        self.tick_s = tick_s
        self.zones: dict[str, ZoneWater] = {
            uid: ZoneWater(zone_id, uid, cfg) for uid, (zone_id, cfg) in zones.items() if cfg is not None
        }

    def in_normal_recirc(self, zone_id: int) -> bool:
        """No water change under way in the zone (a zone without a water cycle is always in normal recirculation)."""
        return all(zw.state.phase is WaterPhase.NORMAL_RECIRC for zw in self.zones.values() if zw.zone_id == zone_id)

    def update_configs(self, configs: Mapping[str, WaterCycleConfig | None]) -> None:
        """New water_cycle settings (from upstream, parsed and validated with the zone config)."""
        for uid, cfg in configs.items():
            zw = self.zones.get(uid)
            if zw is not None and cfg is not None:
                zw.cfg = cfg

    async def load(self) -> None:
        """Restore persisted machine states and resume them safely after a restart."""
        now = self._clock.time()
        for zw in self.zones.values():
            saved = await self._db.get_state(f"water.{zw.zone_uid}")
            if saved is None:
                zw.state = WaterState(phase_started_at_wall=now, solution_started_at=now)
                await self._persist(zw)
                continue
            zw.state, actions = resume(WaterState.from_dict(as_mapping(saved)), now)
            await self._apply(zw, actions)

    async def tick(self) -> None:
        """One step of every zone's machine and recirculation."""
        now_wall = self._clock.time()
        local_now = datetime.fromtimestamp(now_wall, self._tz)
        for zw in self.zones.values():
            inputs = await self._inputs(zw)
            before = zw.state.phase
            zw.state, actions = step(zw.state, inputs, zw.cfg, now_wall, local_now)
            await self._apply(zw, actions)
            if before.owns_recirc and not zw.state.phase.owns_recirc:
                zw.recirc = RecircState()  # hand the recirc pump back to the duty cycle
            if not zw.state.phase.owns_recirc:
                await self._recirc(zw, local_now)

    async def _inputs(self, zw: ZoneWater) -> WaterInputs:
        now = self._clock.monotonic()
        level = self._latest.get(zw.zone_id, Metric.WATER_LEVEL)
        ec = self._latest.get(zw.zone_id, Metric.EC)
        phase = zw.state.phase
        drain: tuple[bool, str | None] = (True, None)
        fill: tuple[bool, str | None] = (True, None)
        if phase in (WaterPhase.NORMAL_RECIRC, WaterPhase.WATER_CHANGE_DRAIN):
            drain = await self._can_run(zw, "drain")
        if phase in (WaterPhase.WATER_CHANGE_DRAIN, WaterPhase.WATER_CHANGE_FILL):
            fill = await self._can_run(zw, "fill")
        requests, zw.requests = zw.requests, set()
        return WaterInputs(
            water_level=None if level is None else level.value,
            level_age_s=None if level is None else now - level.taken_mono,
            ec=None if ec is None else ec.value,
            ec_age_s=None if ec is None else now - ec.taken_mono,
            can_run_drain=drain[0],
            can_run_fill=fill[0],
            operator_start=OperatorRequest.START in requests,
            operator_abort=OperatorRequest.ABORT in requests,
            operator_ack_failed=OperatorRequest.ACK in requests,
            interlock_reason=drain[1] or fill[1],
        )

    async def _can_run(self, zw: ZoneWater, role: str) -> tuple[bool, str | None]:
        ch = self._gate.channel_by_role(zw.zone_id, role)
        if ch is None:
            return False, f"no_{role}_pump"
        if ch.relay_on:
            return True, None
        decision = await self._gate.can_start(zw.zone_id, ch.channel, ch.node_uid)
        return decision.allowed, None if decision.allowed else decision.reason

    async def _apply(self, zw: ZoneWater, actions: Sequence[WaterAction]) -> None:
        for action in actions:
            if isinstance(action, PersistState):
                await self._persist(zw)
            elif isinstance(action, SetPump):
                await self._set_pump(zw, action.channel_role.value, action.on)
            elif isinstance(action, RecordEvent):
                details = dict(action.details)
                by = zw.requested_by.pop(action.type, None)
                if by:
                    details["by"] = by
                await self._alerts.record_event(zw.zone_id, action.type.value, details)
            elif isinstance(action, RaiseAlert):
                await self._alerts.raise_alert(
                    action.code, zone_id=zw.zone_id, scope=action.scope, details=dict(action.details)
                )
            elif isinstance(action, ResolveAlert):
                await self._alerts.resolve(action.code, zone_id=zw.zone_id, scope=action.scope)

    async def _set_pump(self, zw: ZoneWater, role: str, on: bool) -> None:
        ch = self._gate.channel_by_role(zw.zone_id, role)
        if ch is None:
            log.error("zone %s has no %s pump configured", zw.zone_uid, role)
            return
        # The water change holds the NC recirculation OFF only for its drain and fill time-outs.
        lease = _water_change_lease_s(zw.cfg.water_change) if role == "recirc" and not on else None
        decision = await self._gate.switch(ch, on, source="water_cycle", off_lease_s=lease)
        if not decision.allowed:
            log.warning("water cycle %s: %s %s refused: %s", zw.zone_uid, role, "ON" if on else "OFF", decision.reason)

    async def _recirc(self, zw: ZoneWater, local_now: datetime) -> None:
        ch = self._gate.channel_by_role(zw.zone_id, "recirc")
        relay_on = None if ch is None else ch.relay_on
        zw.recirc, decision = decide_recirc(zw.cfg, zw.recirc, local_now, self._clock.monotonic(), relay_on)
        if decision is RecircDecision.LEAVE_ALONE or ch is None:
            return
        want_on = decision is RecircDecision.ON
        if want_on != ch.relay_on:
            lease = None if want_on else zw.cfg.recirc.max_off_minutes * 60.0
            result = await self._gate.switch(ch, want_on, source="recirc_duty", off_lease_s=lease)
            if not result.allowed:
                self._ratelog.warn(
                    f"recirc:{zw.zone_uid}", "zone %s: recirculation ON refused (%s); retried every tick",
                    zw.zone_uid, result.reason,
                )

    async def _persist(self, zw: ZoneWater) -> None:
        await self._db.put_state(f"water.{zw.zone_uid}", zw.state.to_dict(), self._clock.time())

    # ---- operator actions (web/API) ---------------------------------------------------------
    def request(self, zone_uid: str, what: OperatorRequest, by: str) -> bool:
        """Queue an operator request for the next tick; False if the zone has no water cycle."""
        zw = self.zones.get(zone_uid)
        if zw is None:
            return False
        zw.requests.add(what)
        zw.requested_by[what.event] = by  # named in the event the machine records when it carries it out
        return True

    async def start_change(self, zone_uid: str, by: str) -> bool:
        """Operator: start a water change now."""
        return self.request(zone_uid, OperatorRequest.START, by)

    async def abort(self, zone_uid: str, by: str) -> bool:
        """Operator: abort the running water change."""
        return self.request(zone_uid, OperatorRequest.ABORT, by)

    async def ack_failed(self, zone_uid: str, by: str) -> bool:
        """Operator: acknowledge a FAILED water change (back to NORMAL_RECIRC)."""
        return self.request(zone_uid, OperatorRequest.ACK, by)

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Per zone water state for the status page."""
        return {uid: {**zw.state.to_dict(), "recirc": zw.recirc.to_dict()} for uid, zw in self.zones.items()}


def _water_change_lease_s(wc: WaterChangeConfig) -> float:
    """How long a water change may hold the NC recirculation OFF: its drain and fill time-outs, plus a minute."""
    return (wc.drain_timeout_min + wc.fill_timeout_min + 1.0) * 60.0
