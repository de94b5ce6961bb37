"""The safety loop: polls the INA209s and the latest flow/level readings, lets the pure rules decide,
and acts (relay OFF in the same tick, alerts, locks). It is also the interlock every pump start
passes through, the executor of commands for gateway-attached relays, and the watchdog's only feeder.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from typing import Any

from drivers.errors import SensorUnavailableError
from gateway.alerts import Alerts
from gateway.clock import Clock
from gateway.commands import Decision
from gateway.metric_types import Metric
from gateway.metrics import Metrics
from gateway.readings import LatestReadings
from gateway.safety.channels import PumpChannel
from gateway.safety.interlock import CRITICAL_ALERT_CODES, InterlockSnapshot, can_run_pump
from gateway.safety.rules import (
    BIZ_DRY_RUN,
    BIZ_NO_FLOW,
    BIZ_OVERCURRENT,
    ChannelInputs,
    FailSafe,
    LockChannel,
    RaiseAlert,
    ResolveAlert,
    StopPump,
    blind_sensors,
    evaluate,
    operator_reset,
)
from gateway.settings import SafetySection
from gateway.store.db import Database
from gateway.water.usage import integrate_volume

log = logging.getLogger(__name__)

LOCKS_KEY = "safety.locks"
_ERROR_ALERTS = {"overcurrent": BIZ_OVERCURRENT, "no_flow": BIZ_NO_FLOW, "dry_run": BIZ_DRY_RUN}
_ON_COMMANDS = frozenset({"run_pump", "pump_on", "start_pump", "fill", "drain", "irrigate"})
_OFF_COMMANDS = frozenset({"stop_pump", "pump_off"})


class SafetyService:
    """Owns every pump channel's safety state; see the module docstring."""

    def __init__(
        self,
        channels: list[PumpChannel],
        db: Database,
        alerts: Alerts,
        latest: LatestReadings,
        clock: Clock,
        metrics: Metrics,
        settings: SafetySection,
        watchdog: Any | None = None,
    ) -> None:
        self.channels = channels
        self._by_key = {ch.key: ch for ch in channels}
        self._db = db
        self._alerts = alerts
        self._latest = latest
        self._clock = clock
        self._metrics = metrics
        self._settings = settings
        self.watchdog = watchdog
        self.period_s = 1.0 / settings.poll_hz
        self.ticks = 0
        self.last_tick_mono: float | None = None
        self._off_timers: dict[tuple[int, str], asyncio.Task[None]] = {}
        self.on_tick: list[Any] = []  # callables run after each tick (benchmarks, tests)

    # ---- start-up ---------------------------------------------------------------------------
    async def load_locks(self) -> None:
        """Restore locks persisted before a restart (locks survive restarts)."""
        saved: dict[str, str] = await self._db.get_state(LOCKS_KEY) or {}
        for ch in self.channels:
            code = saved.get(f"{ch.zone_id}:{ch.channel}")
            if code:
                ch.lock_code = code
                ch.state = replace(ch.state, latched=(code,))
                if ch.relay is not None and ch.relay_on:
                    self._relay_off(ch)
                log.warning("channel %s/%s locked (%s) since before restart", ch.zone_uid, ch.channel, code)

    async def _save_locks(self) -> None:
        locks = {f"{ch.zone_id}:{ch.channel}": ch.lock_code for ch in self.channels if ch.lock_code}
        await self._db.put_state(LOCKS_KEY, locks, self._clock.time())

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
        """One pass over every channel: read, evaluate, act."""
        now = self._clock.monotonic()
        dt = now - self.last_tick_mono if self.last_tick_mono is not None else 0.0
        self.last_tick_mono = now
        await asyncio.gather(*(self._read_current(ch) for ch in self.channels if ch.monitor is not None))
        deferred: list[tuple[PumpChannel, list[Any]]] = []
        for ch in self.channels:
            if ch.relay is None:
                continue  # node pumps are protected by their node and by the start interlock
            inputs = self._inputs(ch, now)
            ch.last_inputs = inputs
            ch.state, actions = evaluate(ch.state, inputs, ch.limits, now)
            # Act on the relay first, in this tick; the bookkeeping (database) comes after.
            for action in actions:
                if isinstance(action, StopPump):
                    self._relay_off(ch)
                    self._metrics.safety_trips.labels(reason=action.reason_code).inc()
            if actions:
                deferred.append((ch, actions))
            if ch.relay_on:
                self._metrics.pump_runtime_seconds.labels(zone=ch.zone_uid, channel=ch.channel).inc(dt)
            self._track_usage(ch, inputs, now)
        for ch, actions in deferred:
            await self._bookkeeping(ch, actions)
        self.ticks += 1
        for hook in self.on_tick:
            hook()

    async def _read_current(self, ch: PumpChannel) -> None:
        if ch.monitor is None:
            return
        try:
            reading = await ch.monitor.read()
        except SensorUnavailableError:
            return  # stays at the last reading, whose age grows until the rules call it stale
        ch.current_a = reading.current_a
        ch.current_read_mono = self._clock.monotonic()

    def _inputs(self, ch: PumpChannel, now: float) -> ChannelInputs:
        flow = self._latest.get(ch.zone_id, Metric.FLOW_RATE)
        level = self._latest.get(ch.zone_id, Metric.WATER_LEVEL)
        return ChannelInputs(
            desired_on=ch.desired_on,
            relay_on=ch.relay_on,
            current_a=ch.current_a,
            current_age_s=None if ch.current_read_mono is None else now - ch.current_read_mono,
            flow_l_min=None if flow is None else flow.value,
            flow_age_s=None if flow is None else now - flow.received_mono,
            water_level=None if level is None else level.value,
            level_age_s=None if level is None else now - level.received_mono,
        )

    def _relay_off(self, ch: PumpChannel) -> None:
        if ch.relay is not None and ch.relay_on:
            ch.relay.set_pump(False)
            log.warning("safety: %s/%s switched OFF", ch.zone_uid, ch.channel)
        ch.desired_on = False
        timer = self._off_timers.pop(ch.key, None)
        if timer is not None:
            timer.cancel()

    async def _bookkeeping(self, ch: PumpChannel, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, StopPump):
                ch.failures.append(self._clock.monotonic())
                await self._alerts.record_event(
                    ch.zone_id, "SAFETY_STOP", {"channel": ch.channel, "reason": action.reason_code}
                )
            elif isinstance(action, RaiseAlert):
                await self._alerts.raise_alert(
                    action.code, zone_id=ch.zone_id, scope=action.scope, details=dict(action.details)
                )
            elif isinstance(action, ResolveAlert):
                await self._alerts.resolve(action.code, zone_id=ch.zone_id, scope=action.scope)
            elif isinstance(action, LockChannel):
                await self._lock(ch, action.code)

    async def _lock(self, ch: PumpChannel, code: str) -> None:
        if ch.lock_code is None:
            ch.lock_code = code
            await self._save_locks()
            await self._alerts.record_event(ch.zone_id, "SAFETY_LOCK", {"channel": ch.channel, "code": code})

    def _track_usage(self, ch: PumpChannel, inputs: ChannelInputs, now: float) -> None:
        wall = self._clock.time()
        if ch.relay_on and ch.run_started_wall is None:
            ch.run_started_wall, ch.flow_samples = wall, []
        fresh_flow = (
            inputs.flow_l_min is not None
            and inputs.flow_age_s is not None
            and inputs.flow_age_s < ch.limits.stale_after_s
        )
        if ch.relay_on and ch.limits.flow_sensor and fresh_flow:
            assert inputs.flow_l_min is not None and inputs.flow_age_s is not None
            sample = (wall - inputs.flow_age_s, inputs.flow_l_min)
            if not ch.flow_samples or ch.flow_samples[-1][0] != sample[0]:
                ch.flow_samples.append(sample)
        if not ch.relay_on and ch.run_started_wall is not None:
            started, samples = ch.run_started_wall, ch.flow_samples
            ch.run_started_wall, ch.flow_samples = None, []
            asyncio.get_running_loop().create_task(self._log_usage(ch, started, wall, samples))

    async def _log_usage(self, ch: PumpChannel, start: float, end: float, samples: list[tuple[float, float]]) -> None:
        if samples:
            usage = integrate_volume(samples, start, end)
            volume, avg = usage.volume_l, usage.avg_flow_l_min
            details: dict[str, Any] = {
                "kind": ch.role,
                "source": "flow_sensor",
                "gaps_s": sum(g.seconds for g in usage.gaps),
            }
        elif ch.nominal_flow_l_min is not None:
            volume = ch.nominal_flow_l_min * (end - start) / 60
            avg, details = ch.nominal_flow_l_min, {"kind": ch.role, "source": "nominal_flow"}
        else:
            return
        await self._db.execute(
            "INSERT INTO water_usage_logs(zone_id, pump_channel, volume_l, duration_ms, avg_flow_l_min, details,"
            " started_at, finished_at) VALUES (?,?,?,?,?,?,?,?)",
            (ch.zone_id, ch.channel, volume, int((end - start) * 1000), avg, json.dumps(details), start, end),
        )

    # ---- interlock and control --------------------------------------------------------------
    def channel(self, zone_id: int, channel: str) -> PumpChannel | None:
        """The channel or None."""
        return self._by_key.get((zone_id, channel))

    def channel_by_role(self, zone_id: int, role: str) -> PumpChannel | None:
        """The zone's pump with this role (recirc, drain, fill, …)."""
        return next((ch for ch in self.channels if ch.zone_id == zone_id and ch.role == role), None)

    async def can_run_pump(self, zone_id: int, channel: str) -> Decision:
        """SPEC §6: may this pump start now? Raises biz_dry_run when the level is too low."""
        ch = self._by_key.get((zone_id, channel))
        active = {a["code"] for a in await self._alerts.active(zone_id, any_zone=False)}
        level = self._latest.get(zone_id, Metric.WATER_LEVEL)
        now = self._clock.monotonic()
        window = self._settings.failure_window_s
        failures = 0
        if ch is not None:
            ch.failures = [t for t in ch.failures if now - t <= window]
            failures = len(ch.failures)
        limits = ch.limits if ch is not None else None
        snapshot = InterlockSnapshot(
            channel=channel,
            active_alert_codes=frozenset(active & CRITICAL_ALERT_CODES),
            locked_code=ch.lock_code if ch is not None else None,
            water_level=None if level is None else level.value,
            level_age_s=None if level is None else now - level.received_mono,
            stale_after_s=self._settings.stale_after_s,
            min_water_level=limits.min_water_level if limits is not None else self._settings.min_water_level,
            requires_level=True,
            recent_failures=failures,
            max_failures=self._settings.max_failures,
            unavailable_sensors=blind_sensors(ch.last_inputs, ch.limits) if ch and ch.last_inputs else (),
            fail_safe=ch.fail_safe if ch is not None else FailSafe.NO,  # unknown channels count as NO pumps
        )
        decision = can_run_pump(snapshot)
        if decision.raise_alert is not None:
            a = decision.raise_alert
            await self._alerts.raise_alert(a.code, zone_id=zone_id, scope=a.scope, details=dict(a.details))
        if not decision.allowed:
            log.info("interlock refused %s in zone %s: %s", channel, zone_id, decision.reason)
        return Decision(decision.allowed, decision.reason)

    async def set_pump(self, zone_id: int, channel: str, on: bool, source: str) -> Decision:
        """Switch a gateway-attached pump; ON only through the interlock."""
        ch = self._by_key.get((zone_id, channel))
        if ch is None or ch.relay is None:
            return Decision(False, f"no gateway relay {channel!r} in zone {zone_id}")
        if not on:
            self._relay_off(ch)
            return Decision(True, "off")
        if ch.relay_on:
            ch.desired_on = True
            return Decision(True, "already_on")
        decision = await self.can_run_pump(zone_id, channel)
        if decision.allowed:
            ch.desired_on = True
            ch.relay.set_pump(True)
            log.info("%s/%s ON (%s)", ch.zone_uid, channel, source)
        return decision

    # ---- ZoneState for automation --------------------------------------------------------------
    def circulating(self, zone_id: int) -> bool:
        """The zone's recirculation pump runs (dosing only mixes in while the solution moves)."""
        ch = self.channel_by_role(zone_id, "recirc")
        return ch is not None and ch.relay_on and ch.lock_code is None

    def locked(self, zone_id: int) -> bool:
        """Any pump of the zone is locked by a safety trip."""
        return any(ch.lock_code is not None or ch.state.latched for ch in self.channels if ch.zone_id == zone_id)

    # ---- LocalExecutor for the command service ---------------------------------------------
    def handles(self, channel: str) -> bool:
        """True when ``channel`` is a gateway relay."""
        return any(ch.channel == channel and ch.relay is not None for ch in self.channels)

    async def execute(self, zone_id: int, channel: str, cmd: str, params: dict[str, Any]) -> tuple[str, str | None]:
        """Run a command on a gateway relay: run_pump [duration_s], stop_pump, set_pump {on}."""
        on = bool(params.get("on")) if cmd == "set_pump" else cmd in _ON_COMMANDS
        if not on and cmd not in _OFF_COMMANDS and cmd != "set_pump":
            return "FAILED", "unsupported_command"
        decision = await self.set_pump(zone_id, channel, on, source=f"command:{cmd}")
        if not decision.allowed:
            return "FAILED", "interlock"
        duration = params.get("duration_s")
        if on and isinstance(duration, int | float) and duration > 0:
            key = (zone_id, channel)
            old = self._off_timers.pop(key, None)
            if old is not None:
                old.cancel()
            self._off_timers[key] = asyncio.get_running_loop().create_task(
                self._off_after(zone_id, channel, float(duration))
            )
        return "DONE", None

    async def _off_after(self, zone_id: int, channel: str, seconds: float) -> None:
        await self._clock.sleep(seconds)
        self._off_timers.pop((zone_id, channel), None)
        await self.set_pump(zone_id, channel, False, source="timer")

    # ---- node command errors and operator reset ---------------------------------------------
    async def on_command_error(self, record: dict[str, Any], error_code: str, details: dict[str, Any]) -> None:
        """A node reported an error for a command: overcurrent & co. lock the channel like our own trips."""
        zone_id = next((ch.zone_id for ch in self.channels if ch.zone_uid == record.get("zone_uid")), None)
        if zone_id is None:
            return
        channel = str(details.get("channel") or record["channel"])
        code = _ERROR_ALERTS.get(error_code, "biz_command_failed")
        await self._alerts.raise_alert(
            code,
            zone_id=zone_id,
            scope=channel,
            details={"cmd_id": record["cmd_id"], "error_code": error_code, **details},
        )
        ch = self._by_key.get((zone_id, channel))
        if ch is None:
            return
        ch.failures.append(self._clock.monotonic())
        if code in CRITICAL_ALERT_CODES:
            self._relay_off(ch)
            ch.state = replace(ch.state, latched=(*ch.state.latched, code))
            await self._lock(ch, code)

    async def reset(self, zone_uid: str, by: str) -> list[str]:
        """Operator "Reset safety lock": resolve the zone's safety alerts, unlock, record who."""
        zone_channels = [ch for ch in self.channels if ch.zone_uid == zone_uid]
        zone_id = zone_channels[0].zone_id if zone_channels else None
        if zone_id is None:
            return []
        resolved: list[str] = []
        for alert in await self._alerts.active(zone_id, any_zone=False):
            if alert["code"] in CRITICAL_ALERT_CODES and await self._alerts.resolve(
                alert["code"], zone_id=zone_id, scope=alert["scope"], by=by
            ):
                resolved.append(alert["code"])
        unlocked = []
        for ch in zone_channels:
            if ch.lock_code or ch.state.latched:
                unlocked.append(ch.channel)
            ch.lock_code = None
            ch.failures.clear()
            ch.state = operator_reset(ch.state)
        await self._save_locks()
        await self._alerts.record_event(
            zone_id, "SAFETY_LOCK_RESET", {"by": by, "resolved": resolved, "unlocked": unlocked}
        )
        log.warning("safety lock of %s reset by %s (resolved %s)", zone_uid, by, resolved)
        return resolved

    def snapshot(self) -> dict[str, Any]:
        """Pumps per zone for the status page."""
        now = self._clock.monotonic()
        zones: dict[str, Any] = {}
        for ch in self.channels:
            pumps = zones.setdefault(ch.zone_uid, {"pumps": []})["pumps"]
            inputs = ch.last_inputs
            pumps.append(
                {
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
                    "locked": ch.lock_code is not None,
                    "lock_codes": list(ch.state.latched) or ([ch.lock_code] if ch.lock_code else []),
                    "unavailable_sensors": list(ch.state.unavailable),
                }
            )
        return {"zones": zones, "ticks": self.ticks, "watchdog_tripped": bool(getattr(self.watchdog, "tripped", False))}
