"""The one door to every pump (ARCHITECTURE habit 16): the only code that switches a relay or publishes an
actuating node command.

Every caller — the HTTP API and upstream (through the command service), schedules, dosing, the water-change
machine, the recirculation duty cycle, the safety loop's trips — asks this gate. The interlock
(``interlock.can_run_pump``) is checked once, here, for the *physical* pump: a gateway relay (``relay:<name>``)
or a node's channel (``node:<node_uid>/<channel>``). Locks and the recent-failures counter belong to that
pump, are persisted, and survive zone reassignment, node re-registration and restarts.

NC pumps (seed 003 §11–12): ON is the de-energised fail-safe state. Returning to it is refused only by a lock
or a critical alert on that same pump; an OFF is granted for a bounded time only (``max_off_s`` or an explicit
lease, e.g. a water change), after which the safety loop restores it. A timed run never switches an NC pump
OFF at its end.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from drivers.errors import RelayError
from drivers.interfaces import Watchdog
from firmware_contracts.commands import CommandName, ValidCommand
from firmware_contracts.topics import command_topic
from firmware_contracts.validate import MessageKind, validate
from gateway.alerts import Alerts
from gateway.clock import Clock
from gateway.jsonvalue import as_list, as_mapping, to_float
from gateway.prometheus import Metrics
from gateway.ratelog import RateLimitedLog
from gateway.readings import LatestReadings
from gateway.safety.channels import PumpChannel, pump_id_of
from gateway.safety.inputs import channel_inputs
from gateway.safety.interlock import CRITICAL_ALERT_CODES, InterlockSnapshot, can_run_pump
from gateway.safety.rules import FailSafe, blind_sensors
from gateway.settings import SafetySection
from gateway.store.db import Database
from gateway.telemetry_metrics import Metric

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, int, bool], Awaitable[None]]
PUMPS_KEY = "safety.pumps"
LEGACY_LOCKS_KEY = "safety.locks"  # {"<zone_id>:<channel>": code} before locks belonged to pumps
NON_PUMP_ROLES = frozenset({"light"})  # actuators the pump interlock does not apply to


@dataclass(frozen=True)
class Decision:
    """The gate's answer: allowed or not, and why (shown to the operator, stored with a refused command)."""

    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class Dispatched:
    """What became of a command at the gate: SENT to a node, DONE/FAILED on a gateway relay, or refused."""

    status: str  # SENT | DONE | FAILED | REFUSED
    reason: str | None = None


class NodeDirectory(Protocol):
    """Where a node is (the registry as the gate needs it)."""

    def node_zone_uid(self, node_uid: str) -> str | None:
        """The zone uid the node is assigned to, or None."""
        ...


class SafetyGate:
    """Owns the relays and the actuating publisher; see the module docstring."""

    def __init__(
        self,
        channels: Iterable[PumpChannel],
        db: Database,
        alerts: Alerts,
        latest: LatestReadings,
        clock: Clock,
        metrics: Metrics,
        settings: SafetySection,
        publish: Publish,
        nodes: NodeDirectory,
        greenhouse_uid: str,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.channels = list(channels)
        self._by_key = {ch.key: ch for ch in self.channels}
        self._by_pump = {ch.pump_id: ch for ch in self.channels}
        self._db = db
        self._alerts = alerts
        self._latest = latest
        self._clock = clock
        self._metrics = metrics
        self._settings = settings
        self._publish = publish
        self._nodes = nodes
        self._gh = greenhouse_uid
        self.watchdog = watchdog
        self._ratelog = RateLimitedLog(log, 60.0, clock.monotonic)
        self._locks: dict[str, str] = {}
        self._failures: dict[str, list[float]] = {}  # pump id → wall times of recent failures
        self._roles = {(ch.node_uid, ch.channel): ch.role for ch in self.channels}

    # ---- identity, locks, failures -------------------------------------------------------------
    def channel(self, zone_id: int, channel: str) -> PumpChannel | None:
        """The configured pump of this zone and channel, or None."""
        return self._by_key.get((zone_id, channel))

    def channel_by_role(self, zone_id: int, role: str) -> PumpChannel | None:
        """The zone's pump with this role (recirc, drain, fill, …)."""
        return next((ch for ch in self.channels if ch.zone_id == zone_id and ch.role == role), None)

    def lock_of(self, ch: PumpChannel) -> str | None:
        """The lock code of this physical pump, or None."""
        return self._locks.get(ch.pump_id)

    def locked_pumps(self) -> dict[str, str]:
        """Every locked pump id with its code."""
        return dict(self._locks)

    async def load(self) -> None:
        """Restore locks and failure counters persisted before a restart; locked relays go OFF at once."""
        saved = as_mapping(await self._db.get_state(PUMPS_KEY) or {})
        self._locks = {k: str(v) for k, v in as_mapping(saved.get("locks") or {}).items()}
        self._failures = {
            k: [to_float(t) for t in as_list(v)] for k, v in as_mapping(saved.get("failures") or {}).items()
        }
        legacy = as_mapping(await self._db.get_state(LEGACY_LOCKS_KEY) or {})
        for ch in self.channels:
            code = legacy.get(f"{ch.zone_id}:{ch.channel}")
            if code:
                self._locks.setdefault(ch.pump_id, str(code))
        for pump_id, code in self._locks.items():
            locked = self._by_pump.get(pump_id)
            if locked is None:
                continue
            ch = locked
            ch.state = replace(ch.state, latched=tuple(dict.fromkeys((*ch.state.latched, code))))
            if ch.relay is not None and ch.relay_on:
                self._relay(ch, False)
            log.warning("pump %s locked (%s) since before restart", pump_id, code)

    async def _save(self) -> None:
        doc = {"locks": self._locks, "failures": self._failures}
        await self._db.put_state(PUMPS_KEY, doc, self._clock.time())

    async def lock(self, pump_id: str, code: str, zone_id: int | None) -> None:
        """Lock the physical pump (idempotent); persisted and recorded as a zone event."""
        if pump_id in self._locks:
            return
        self._locks[pump_id] = code
        await self._save()
        await self._alerts.record_event(zone_id, "SAFETY_LOCK", {"pump": pump_id, "code": code})

    async def record_failure(self, pump_id: str) -> None:
        """Count a failure of this pump (persisted: the counter survives restarts)."""
        window = self._settings.failure_window_s
        now = self._clock.time()
        recent = [t for t in self._failures.get(pump_id, []) if now - t <= window]
        self._failures[pump_id] = [*recent, now]
        await self._save()

    def recent_failures(self, pump_id: str) -> int:
        """Failures of this pump within the failure window."""
        now = self._clock.time()
        return sum(1 for t in self._failures.get(pump_id, []) if now - t <= self._settings.failure_window_s)

    async def reset(self, zone_id: int, pump_ids: Iterable[str]) -> list[str]:
        """Operator reset: unlock these pumps and clear their failure counters; returns the ones unlocked."""
        unlocked = []
        for pump_id in pump_ids:
            if self._locks.pop(pump_id, None) is not None:
                unlocked.append(pump_id)
            self._failures.pop(pump_id, None)
        await self._save()
        return unlocked

    # ---- the interlock, once -------------------------------------------------------------------
    @property
    def watchdog_tripped(self) -> bool:
        """True while the relay watchdog holds every coil released."""
        return bool(self.watchdog is not None and self.watchdog.tripped)

    async def can_start(self, zone_id: int, channel: str, node_uid: str | None = None) -> Decision:
        """SPEC §6 for the physical pump behind (zone, channel[, node]); raises biz_dry_run when the level is low."""
        ch = self._resolve(zone_id, channel, node_uid)
        pump_id = ch.pump_id if ch is not None else pump_id_of(node_uid, channel)
        alerts = await self._alerts.active(zone_id, any_zone=False)
        active = {a["code"] for a in alerts}
        own = {a["code"] for a in alerts if a["scope"] == channel}
        level = self._latest.get(zone_id, Metric.WATER_LEVEL)
        now = self._clock.monotonic()
        limits = ch.limits if ch is not None else None
        snapshot = InterlockSnapshot(
            channel=channel,
            active_alert_codes=frozenset(active & CRITICAL_ALERT_CODES),
            own_alert_codes=frozenset(own & CRITICAL_ALERT_CODES),
            locked_code=self._locks.get(pump_id),
            water_level=None if level is None else level.value,
            level_age_s=None if level is None else now - level.taken_mono,
            stale_after_s=self._settings.stale_after_s,
            min_water_level=limits.min_water_level if limits is not None else self._settings.min_water_level,
            requires_level=True,
            recent_failures=self.recent_failures(pump_id),
            max_failures=self._settings.max_failures,
            # Judged on the readings as they are now, not as the last tick saw them.
            unavailable_sensors=blind_sensors(channel_inputs(ch, self._latest, now), ch.limits) if ch else (),
            fail_safe=ch.fail_safe if ch is not None else FailSafe.NO,  # unknown channels count as NO pumps
            watchdog_tripped=self.watchdog_tripped,
        )
        decision = can_run_pump(snapshot)
        if decision.raise_alert is not None:
            a = decision.raise_alert
            await self._alerts.raise_alert(a.code, zone_id=zone_id, scope=a.scope, details=dict(a.details))
        if not decision.allowed:
            self._metrics.interlock_refusals.labels(reason=decision.reason.split(":")[0]).inc()
            log.info("interlock refused %s in zone %s: %s", pump_id, zone_id, decision.reason)
        return Decision(decision.allowed, decision.reason)

    def _resolve(self, zone_id: int, channel: str, node_uid: str | None) -> PumpChannel | None:
        if node_uid is not None:
            return self._by_pump.get(pump_id_of(node_uid, channel))
        return self._by_key.get((zone_id, channel))

    # ---- switching (water cycle, recirculation, manual control) -----------------------------------
    async def switch(
        self, ch: PumpChannel, on: bool, source: str, *, off_lease_s: float | None = None
    ) -> Decision:
        """Switch a pump ON (through the interlock) or OFF; an NC pump's OFF lasts ``off_lease_s`` at most."""
        if not on:
            if not await self._switch_off(ch, source, off_lease_s):
                return Decision(False, "relay_held_by_watchdog")  # an NC pump keeps running: the safe side
            return Decision(True, "off")
        if ch.relay_on:
            ch.desired_on = True
            return Decision(True, "already_on")
        decision = await self.can_start(ch.zone_id, ch.channel, ch.node_uid)
        if decision.allowed and not await self._switch_on(ch, source):
            return Decision(False, "relay_held_by_watchdog")
        return decision

    async def _switch_on(self, ch: PumpChannel, source: str) -> bool:
        if ch.relay is not None and not self._relay(ch, True):
            return False
        ch.desired_on = True
        ch.off_lease_until = None
        if ch.relay is None:
            await self._node_switch(ch, True, source)
        level = logging.WARNING if source == "nc_max_off" else logging.INFO
        log.log(level, "%s ON (%s)", ch.pump_id, source)
        return True

    async def _switch_off(self, ch: PumpChannel, source: str, off_lease_s: float | None) -> bool:
        was_on = ch.relay_on
        ch.run_until = None
        ch.desired_on = False
        if ch.fail_safe is FailSafe.NC and off_lease_s is not None:
            ch.off_lease_until = self._clock.monotonic() + off_lease_s
        if ch.relay is not None:
            if not self._relay(ch, False):
                return False
        elif was_on or ch.fail_safe is FailSafe.NC:
            await self._node_switch(ch, False, source)
        if was_on:
            log.info("%s OFF (%s)", ch.pump_id, source)
        return True

    def trip_off(self, ch: PumpChannel, reason: str) -> None:
        """Safety trip: a relay goes OFF now, in the caller's tick (node pumps: see ``trip_node_off``)."""
        ch.run_until = None
        ch.desired_on = False
        if ch.relay is not None and ch.relay_on and self._relay(ch, False):
            log.warning("safety trip %s: %s switched OFF", reason, ch.pump_id)

    async def trip_node_off(self, ch: PumpChannel, reason: str) -> None:
        """Safety trip of a node pump: publish the stop (the node's own protection acts too)."""
        if ch.relay is None and ch.node_on:
            await self._node_switch(ch, False, f"safety:{reason}")
            log.warning("safety trip %s: %s switched OFF", reason, ch.pump_id)

    async def restore_nc(self, ch: PumpChannel, reason: str) -> None:
        """Return an NC pump to its fail-safe ON (the max-OFF backstop); no interlock: this is the safe state."""
        if ch.fail_safe is not FailSafe.NC or ch.relay_on:
            return
        await self._switch_on(ch, reason)
        await self._alerts.record_event(ch.zone_id, "NC_PUMP_RESTORED", {"pump": ch.pump_id, "reason": reason})

    def _relay(self, ch: PumpChannel, on: bool) -> bool:
        """Drive the coil; False when the relay watchdog holds the coils released (then nothing moved)."""
        assert ch.relay is not None
        try:
            ch.relay.set_pump(on)
        except RelayError as exc:
            state = "ON" if on else "OFF"
            self._ratelog.error(f"relay:{ch.pump_id}", "%s not switched %s: %s", ch.pump_id, state, exc)
            return False
        return True

    async def _node_switch(self, ch: PumpChannel, on: bool, source: str) -> None:
        assert ch.node_uid is not None
        command = ValidCommand(CommandName.SET_RELAY, {"state": "ON" if on else "OFF"})
        cmd_id = f"gate-{ch.node_uid}-{ch.channel}-{int(self._clock.time() * 1000)}"
        await self._send(ch.node_uid, ch.channel, command, cmd_id)
        ch.node_on = on

    async def end_expired_runs(self) -> None:
        """Timed runs whose time is up go OFF (called by the supervised safety loop every tick)."""
        now = self._clock.monotonic()
        for ch in self.channels:
            if ch.run_until is not None and now >= ch.run_until:
                ch.run_until = None
                await self._switch_off(ch, "timer", None)

    # ---- commands (API, upstream, schedules, dosing) ------------------------------------------
    def is_local(self, channel: str) -> bool:
        """True when ``channel`` names a gateway relay."""
        return any(ch.channel == channel and ch.relay is not None for ch in self.channels)

    async def dispatch(
        self, zone_id: int, channel: str, node_uid: str | None, command: ValidCommand, cmd_id: str, source: str
    ) -> Dispatched:
        """Carry out a validated command: the interlock for anything that actuates, then the relay or the node."""
        ch = self._resolve(zone_id, channel, node_uid)
        role = self._roles.get((node_uid, channel))
        if command.actuates and role not in NON_PUMP_ROLES:
            if ch is not None and ch.relay_on and command.pump_on:
                decision = Decision(True, "already_on")
            else:
                decision = await self.can_start(zone_id, channel, node_uid)
            if not decision.allowed:
                return Dispatched("REFUSED", decision.reason)
        elif command.actuates and self.watchdog_tripped:
            return Dispatched("REFUSED", "watchdog_tripped")
        if ch is not None and ch.fail_safe is FailSafe.NC and command.name is CommandName.RUN_PUMP:
            # An NC pump's default is ON: a bounded run must not end with the node switching it OFF.
            command = ValidCommand(CommandName.SET_RELAY, {"state": "ON"})
        if node_uid is None:
            return await self._run_local(ch, command, source)
        await self._send(node_uid, channel, command, cmd_id)
        if ch is not None and command.pump_on is not None:
            ch.run_cmd_id = cmd_id if command.pump_on else ch.run_cmd_id
            ch.node_on = command.pump_on
            ch.desired_on = command.pump_on
            if not command.pump_on and ch.fail_safe is FailSafe.NC:
                ch.off_lease_until = None  # an operator stop gets the plain max-OFF limit
        return Dispatched("SENT")

    def local_running(self, zone_id: int, channel: str) -> bool:
        """Is the gateway relay ``channel`` of the zone running its pump now?"""
        ch = self._resolve(zone_id, channel, None)
        return ch is not None and ch.relay_on

    async def undo_local_start(self, zone_id: int, channel: str) -> None:
        """Stop a relay pump that a command started but could not record: the caller gets an error, so nothing
        may have happened. An NC pump is left running (ON is its safe state; the duty cycle takes it from there)."""
        ch = self._resolve(zone_id, channel, None)
        if ch is not None and ch.relay is not None and ch.fail_safe is FailSafe.NO:
            await self._switch_off(ch, "command_not_recorded", None)

    async def _run_local(self, ch: PumpChannel | None, command: ValidCommand, source: str) -> Dispatched:
        if ch is None or ch.relay is None:
            return Dispatched("FAILED", "unknown_relay")
        on = command.pump_on
        if on is None:
            return Dispatched("FAILED", "unsupported_command")
        if not on:
            await self._switch_off(ch, f"command:{command.name}", None)
            return Dispatched("DONE")
        if not ch.relay_on and not await self._switch_on(ch, f"command:{command.name}:{source}"):
            return Dispatched("FAILED", "relay_held_by_watchdog")
        duration = command.duration_s
        # A timed run ends in the pump's default: NO pumps stop, an NC pump is left running.
        if duration is not None and ch.fail_safe is FailSafe.NO:
            # Ended by the safety loop's tick, not by a task of its own that nobody would see fail.
            ch.run_until = self._clock.monotonic() + duration
        return Dispatched("DONE")

    async def _send(self, node_uid: str, channel: str, command: ValidCommand, cmd_id: str) -> None:
        zone_uid = self._nodes.node_zone_uid(node_uid)
        if zone_uid is None:
            raise NodeNotAssigned(node_uid)
        payload = {"cmd": command.name.value, "cmd_id": cmd_id, "params": dict(command.params),
                   "ts": round(self._clock.time(), 3)}
        problem = validate(MessageKind.COMMAND, payload)
        if problem is not None:  # the vocabulary was checked already; this guards the payload we build
            raise ValueError(f"outbound command {cmd_id} breaks the contract: {problem}")
        topic = command_topic(self._gh, zone_uid, node_uid, channel)
        await self._publish(topic, json.dumps(payload).encode(), 1, False)


class NodeNotAssigned(Exception):
    """A command for a node that is not assigned to any zone cannot be addressed."""

    def __init__(self, node_uid: str) -> None:
        super().__init__(f"node {node_uid!r} is not assigned to a zone")
        self.node_uid = node_uid
