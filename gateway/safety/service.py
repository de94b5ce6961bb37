"""The safety loop: polls the INA209s and the latest flow/level/current readings, lets the pure rules decide,
and acts through the gate (relay OFF in the same tick, node stops, NC restores, alerts, locks). It is the
watchdog's only feeder. It never switches anything itself: ``gateway/safety/gate.py`` does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TypedDict

from drivers.errors import SensorUnavailableError
from drivers.interfaces import Watchdog
from gateway.alerts import Alerts
from gateway.clock import Clock
from gateway.prometheus import Metrics
from gateway.readings import LatestReadings
from gateway.safety.channels import PumpChannel, pump_id_of
from gateway.safety.gate import SafetyGate
from gateway.safety.inputs import channel_inputs
from gateway.safety.interlock import CRITICAL_ALERT_CODES
from gateway.safety.rules import (
    BIZ_DRY_RUN,
    BIZ_NO_FLOW,
    BIZ_OVERCURRENT,
    LockChannel,
    RaiseAlert,
    ResolveAlert,
    RestorePump,
    SafetyAction,
    StopPump,
    evaluate,
    operator_reset,
)
from gateway.safety.usage import UsageLogger
from gateway.store.commands import CommandJson


class PumpSnapshot(TypedDict):
    """One pump as the status page shows it."""

    pump_id: str
    channel: str
    role: str
    node_uid: str | None
    fail_safe_mode: str
    desired_on: bool
    relay_on: bool
    coil_energised: bool | None
    current_a: float | None
    current_age_s: float | None
    flow_l_min: float | None
    locked: bool
    lock_codes: list[str]
    unavailable_sensors: list[str]
    recent_failures: int


class ZoneSnapshot(TypedDict):
    """The pumps of one zone."""

    pumps: list[PumpSnapshot]


class SafetySnapshot(TypedDict):
    """``SafetyService.snapshot()``: pumps per zone uid, loop ticks, watchdog state."""

    zones: dict[str, ZoneSnapshot]
    ticks: int
    watchdog_tripped: bool


log = logging.getLogger(__name__)

_ERROR_ALERTS = {"overcurrent": BIZ_OVERCURRENT, "no_flow": BIZ_NO_FLOW, "dry_run": BIZ_DRY_RUN}


class SafetyService:
    """Ticks every pump channel's rules and carries out their actions through the gate."""

    def __init__(
        self,
        gate: SafetyGate,
        alerts: Alerts,
        latest: LatestReadings,
        clock: Clock,
        metrics: Metrics,
        poll_hz: float,
        usage: UsageLogger,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.gate = gate
        self.channels = gate.channels
        self._alerts = alerts
        self._latest = latest
        self._clock = clock
        self._metrics = metrics
        self._usage = usage
        self.watchdog = watchdog
        self.period_s = 1.0 / poll_hz
        self.ticks = 0
        self.last_tick_mono: float | None = None
        self.on_tick: list[Callable[[], None]] = []  # callables run after each tick (benchmarks, tests)

    async def load(self) -> None:
        """Restore locks and failure counters (they survive restarts)."""
        await self.gate.load()

    # ---- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Tick at ``poll_hz`` forever; each healthy tick feeds the watchdog."""
        if self.watchdog is not None:
            self.watchdog.ready()
        next_at = self._clock.monotonic()
        while True:
            started = time.perf_counter()
            await self.tick()
            self._metrics.safety_tick_seconds.observe(time.perf_counter() - started)
            if self.watchdog is not None:
                self.watchdog.feed()
            next_at += self.period_s
            delay = next_at - self._clock.monotonic()
            if delay < -self.period_s:  # fell behind (e.g. a long GC): don't burst to catch up
                next_at = self._clock.monotonic()
                delay = 0.0
            await self._clock.sleep(max(0.0, delay))

    async def tick(self) -> None:
        """One pass over every channel: read, evaluate, act (relays first, bookkeeping after)."""
        now = self._clock.monotonic()
        dt = now - self.last_tick_mono if self.last_tick_mono is not None else 0.0
        self.last_tick_mono = now
        for ch in self.channels:
            if ch.monitor is not None:
                await self._read_current(ch)
        deferred: list[tuple[PumpChannel, list[SafetyAction]]] = []
        for ch in self.channels:
            inputs = channel_inputs(ch, self._latest, now)
            ch.last_inputs = inputs
            ch.state, actions = evaluate(ch.state, inputs, ch.limits, now)
            for action in actions:
                if isinstance(action, StopPump):
                    self.gate.trip_off(ch, action.reason_code)  # a relay goes OFF in this tick
                    self._metrics.safety_trips.labels(reason=action.reason_code).inc()
            if actions:
                deferred.append((ch, actions))
            if ch.relay_on:
                self._metrics.pump_runtime_seconds.labels(zone=ch.zone_uid, channel=ch.channel).inc(dt)
            self._usage.track(ch, inputs)
        for ch, actions in deferred:
            await self._bookkeeping(ch, actions)
        await self.gate.end_expired_runs()
        await self._usage.flush()
        self.ticks += 1
        for hook in self.on_tick:
            hook()

    async def _read_current(self, ch: PumpChannel) -> None:
        assert ch.monitor is not None
        try:
            reading = await ch.monitor.read()
        except SensorUnavailableError:
            return  # stays at the last reading, whose age grows until the rules call it stale
        ch.current_a = reading.current_a
        ch.current_read_mono = self._clock.monotonic()

    async def _bookkeeping(self, ch: PumpChannel, actions: list[SafetyAction]) -> None:
        for action in actions:
            if isinstance(action, StopPump):
                await self.gate.trip_node_off(ch, action.reason_code)
                await self.gate.record_failure(ch.pump_id)
                await self._alerts.record_event(
                    ch.zone_id, "SAFETY_STOP", {"pump": ch.pump_id, "channel": ch.channel, "reason": action.reason_code}
                )
            elif isinstance(action, RestorePump):
                self._metrics.nc_restores.labels(pump=ch.pump_id).inc()
                await self.gate.restore_nc(ch, action.reason_code)
            elif isinstance(action, RaiseAlert):
                await self._alerts.raise_alert(
                    action.code, zone_id=ch.zone_id, scope=action.scope, details=dict(action.details)
                )
            elif isinstance(action, ResolveAlert):
                await self._alerts.resolve(action.code, zone_id=ch.zone_id, scope=action.scope)
            elif isinstance(action, LockChannel):
                await self.gate.lock(ch.pump_id, action.code, ch.zone_id)

    # ---- node command errors and operator reset ---------------------------------------------
    async def on_command_error(self, record: CommandJson, error_code: str, details: Mapping[str, object]) -> None:
        """A node reported an error for a command: overcurrent & co. lock that node pump like our own trips."""
        zone_id = next((ch.zone_id for ch in self.channels if ch.zone_uid == record.get("zone_uid")), None)
        channel = str(details.get("channel") or record["channel"])
        node_uid = record.get("node_uid")
        code = _ERROR_ALERTS.get(error_code, "biz_command_failed")
        pump_id = pump_id_of(str(node_uid) if node_uid else None, channel)
        ch = next((c for c in self.channels if c.pump_id == pump_id), None)
        if ch is not None:
            ch.node_on = False
            ch.desired_on = False
        # Protect first (lock, persisted), then tell.
        if code in CRITICAL_ALERT_CODES:
            if ch is not None:
                ch.state = replace(ch.state, latched=(*ch.state.latched, code))
            await self.gate.lock(pump_id, code, zone_id)
        await self.gate.record_failure(pump_id)
        await self._alerts.raise_alert(
            code,
            zone_id=zone_id,
            scope=channel,
            details={"cmd_id": record["cmd_id"], "error_code": error_code, "node_uid": node_uid, **details},
        )

    async def reset(self, zone_uid: str, by: str) -> list[str]:
        """Operator "Reset safety lock": resolve the zone's safety alerts, unlock its pumps, record who."""
        zone_channels = [ch for ch in self.channels if ch.zone_uid == zone_uid]
        zone_id = zone_channels[0].zone_id if zone_channels else None
        if zone_id is None:
            return []
        resolved: list[str] = []
        scopes = set()
        for alert in await self._alerts.active(zone_id, any_zone=False):
            if alert["code"] in CRITICAL_ALERT_CODES and await self._alerts.resolve(
                alert["code"], zone_id=zone_id, scope=alert["scope"], by=by
            ):
                resolved.append(alert["code"])
                scopes.add(alert["scope"])
        pump_ids = {ch.pump_id for ch in zone_channels}
        # Node pumps locked through command errors may have no configured channel: their alert scope names them.
        pump_ids |= {p for p in self.gate.locked_pumps() if p.startswith("node:") and p.split("/")[-1] in scopes}
        unlocked = await self.gate.reset(zone_id, sorted(pump_ids))
        for ch in zone_channels:
            ch.state = operator_reset(ch.state)
        await self._alerts.record_event(
            zone_id, "SAFETY_LOCK_RESET", {"by": by, "resolved": resolved, "unlocked": unlocked}
        )
        log.warning("safety lock of %s reset by %s (resolved %s)", zone_uid, by, resolved)
        return resolved

    # ---- ZoneState for automation --------------------------------------------------------------
    def circulating(self, zone_id: int) -> bool:
        """The zone's recirculation pump runs (dosing only mixes in while the solution moves)."""
        ch = self.gate.channel_by_role(zone_id, "recirc")
        return ch is not None and ch.relay_on and self.gate.lock_of(ch) is None

    def locked(self, zone_id: int) -> bool:
        """Any pump of the zone is locked by a safety trip."""
        return any(
            self.gate.lock_of(ch) is not None or ch.state.latched for ch in self.channels if ch.zone_id == zone_id
        )

    def snapshot(self) -> SafetySnapshot:
        """Pumps per zone for the status page."""
        now = self._clock.monotonic()
        zones: dict[str, ZoneSnapshot] = {}
        for ch in self.channels:
            pumps = zones.setdefault(ch.zone_uid, {"pumps": []})["pumps"]
            inputs = ch.last_inputs
            lock = self.gate.lock_of(ch)
            pumps.append(
                {
                    "pump_id": ch.pump_id,
                    "channel": ch.channel,
                    "role": ch.role,
                    "node_uid": ch.node_uid,
                    "fail_safe_mode": ch.fail_safe.value,
                    "desired_on": ch.desired_on,
                    "relay_on": ch.relay_on,
                    "coil_energised": bool(ch.relay.coil_energised) if ch.relay is not None else None,
                    "current_a": ch.current_a,
                    "current_age_s": None if ch.current_read_mono is None else round(now - ch.current_read_mono, 2),
                    "flow_l_min": inputs.flow_l_min if inputs is not None and ch.limits.flow_sensor else None,
                    "locked": lock is not None,
                    "lock_codes": list(ch.state.latched) or ([lock] if lock else []),
                    "unavailable_sensors": list(ch.state.unavailable),
                    "recent_failures": self.gate.recent_failures(ch.pump_id),
                }
            )
        return {"zones": zones, "ticks": self.ticks, "watchdog_tripped": self.gate.watchdog_tripped}

