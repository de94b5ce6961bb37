"""Per-channel pump safety rules: one pure tick of the safety loop (SPEC §6, seed 003 §14).

``evaluate(state, inputs, limits, now)`` looks at what we command and what the sensors say and
returns the new state plus the actions the async shell must carry out. ``now`` is monotonic
seconds; sensor ages are seconds on the same clock. A reading that is missing or older than
``stale_after_s`` is *unavailable* and never treated as 0.

Rules, checked in this order while the pump is commanded ON (first hit wins, one stop per tick):

* a channel with a latched critical alert keeps getting ``StopPump`` (the alert is not repeated);
* overcurrent: fresh current > ``overcurrent_a`` ⇒ StopPump + ``biz_overcurrent`` + LockChannel;
* dry run: fresh water level < ``min_water_level`` ⇒ StopPump + ``biz_dry_run`` (no lock: the
  active critical alert already blocks every start until the operator resets it);
* no flow: flow below ``min_flow_l_min`` for longer than ``no_flow_grace_s`` since switch-on or
  since flow was last good ⇒ StopPump + ``biz_no_flow`` + LockChannel. Without a (fresh) flow
  reading and with ``level_change_min`` set, "the level moved less than ``level_change_min`` in
  ``no_flow_grace_s``" is used instead (drain/fill pumps; a recirc pump does not move the level);
* blind protection (see below).

While the pump is commanded OFF: fresh current > ``idle_current_a`` or fresh flow > ``min_flow_l_min``
measured at least ``settle_s`` after switch-off ⇒ ``biz_pump_stuck_on`` (critical) + LockChannel,
once. We do not send StopPump: the relay is already commanded off, and with a welded NC relay there
is nothing further we can do; repeating commands would only make the relay chatter.

Unavailable sensors (conservative behaviour):

* any configured sensor unavailable for ``unavailable_grace_s`` ⇒ ``biz_sensor_unavailable``
  (warning, scope = channel, details name the sensors). It is self-clearing: ``ResolveAlert`` as
  soon as every sensor is fresh again;
* a NO pump that is running while a protection is blind (current lost ⇒ no overcurrent check;
  flow lost with no level fallback ⇒ no no-flow check; level lost while ``min_water_level`` is
  set ⇒ no dry-run check) is stopped after ``unavailable_grace_s`` (``StopPump("biz_sensor_unavailable")``,
  no lock) and ``blind_sensors`` tells the interlock not to start it again until they are back;
* an NC pump (the main recirculation pump) is left in its fail-safe state, running. Stopping it
  means energising the coil to hold the pump off, which starves the plants of moving water, the
  very failure the NC wiring exists to prevent; a dead current sensor does not make the motor
  less safe than the controller being dead, and the motor's own fuse/thermal cut-out still works.

NC pumps are never starved (seed 003 §11–12): an NC pump commanded OFF for longer than ``max_off_s``
(or past the caller's explicit ``off_allowed_until`` lease, e.g. a water change's drain and fill) gets
``RestorePump("nc_max_off")``: the shell de-energises the coil, whatever asked for OFF. The only exception
is a latched critical alert on that same pump: then it stays OFF and ``biz_no_circulation`` (critical)
says the zone has no circulation, once.

biz_* safety alerts are latched in the state and only cleared by ``operator_reset``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from gateway.jsonvalue import opt_float, str_tuple

BIZ_OVERCURRENT = "biz_overcurrent"
BIZ_NO_FLOW = "biz_no_flow"
BIZ_DRY_RUN = "biz_dry_run"
BIZ_PUMP_STUCK_ON = "biz_pump_stuck_on"
BIZ_SENSOR_UNAVAILABLE = "biz_sensor_unavailable"
BIZ_NO_CIRCULATION = "biz_no_circulation"


class Severity(StrEnum):
    """Alert severity as shown to the operator."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class FailSafe(StrEnum):
    """What the pump does when its relay coil is de-energised (seed 003 §11)."""

    NC = "NC"  # contacts closed without power: pump runs (main recirculation pump)
    NO = "NO"  # contacts open without power: pump stops


class Sensor(StrEnum):
    """The sensors one pump channel may have."""

    CURRENT = "current"
    FLOW = "flow"
    LEVEL = "level"


@dataclass(frozen=True)
class StopPump:
    """Switch the pump off now (relay to the pump-OFF position)."""

    reason_code: str


@dataclass(frozen=True)
class RestorePump:
    """Return an NC pump to its fail-safe ON (de-energise the coil); never needs the interlock."""

    reason_code: str


@dataclass(frozen=True)
class RaiseAlert:
    """Create or bump the ACTIVE alert ``code`` for this zone and scope (usually the channel)."""

    code: str
    severity: Severity
    details: Mapping[str, object] = field(default_factory=dict)
    scope: str = ""


@dataclass(frozen=True)
class ResolveAlert:
    """Resolve the ACTIVE alert ``code`` for this zone and scope."""

    code: str
    scope: str = ""


@dataclass(frozen=True)
class LockChannel:
    """Lock the channel: nothing may start it until an operator resets the lock."""

    code: str


SafetyAction = StopPump | RestorePump | RaiseAlert | ResolveAlert | LockChannel


def fresh(value: float | None, age_s: float | None, stale_after_s: float) -> float | None:
    """The value if it is present, finite and not older than ``stale_after_s``; else None."""
    if value is None or age_s is None or not math.isfinite(value) or age_s > stale_after_s:
        return None
    return value


@dataclass(frozen=True)
class ChannelLimits:
    """Thresholds and sensor wiring of one pump channel (currents in A, flow in L/min, level in %)."""

    overcurrent_a: float = 1.5
    idle_current_a: float = 0.1
    min_flow_l_min: float = 1.0
    no_flow_grace_s: float = 30.0
    stale_after_s: float = 30.0
    min_water_level: float | None = 10.0  # None: no dry-run check (e.g. a fill pump fed from mains)
    level_change_min: float | None = None  # None: no level-based no-flow check (recirc pumps)
    current_sensor: bool = True
    flow_sensor: bool = True
    level_sensor: bool = True
    channel: str = "pump"
    fail_safe: FailSafe = FailSafe.NO
    unavailable_grace_s: float = 10.0
    settle_s: float = 5.0  # after switch-off, current and flow need this long to fall to idle
    max_off_s: float | None = None  # NC pumps: longest OFF stretch without an explicit lease

    def __post_init__(self) -> None:
        for name in ("overcurrent_a", "no_flow_grace_s", "stale_after_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("idle_current_a", "min_flow_l_min", "unavailable_grace_s", "settle_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        if self.idle_current_a >= self.overcurrent_a:
            raise ValueError("idle_current_a must be below overcurrent_a")
        if self.level_change_min is not None and not self.level_change_min > 0:
            raise ValueError("level_change_min must be > 0 or None")
        if self.max_off_s is not None and not self.max_off_s > 0:
            raise ValueError("max_off_s must be > 0 or None")


@dataclass(frozen=True)
class ChannelInputs:
    """What we command and what the sensors say this tick; None means unavailable, never 0."""

    desired_on: bool
    relay_on: bool  # the pump state we command (pump terms; NC/NO mapping is the relay adapter's job)
    current_a: float | None = None
    current_age_s: float | None = None
    flow_l_min: float | None = None
    flow_age_s: float | None = None
    water_level: float | None = None
    level_age_s: float | None = None
    off_allowed_until: float | None = None  # NC pumps: an explicit lease to stay OFF longer than max_off_s


@dataclass(frozen=True)
class ChannelSafetyState:
    """Timers and latches of one channel between ticks (monotonic seconds)."""

    on_since: float | None = None
    off_since: float | None = None
    level_at_on: float | None = None  # level reference for the no-level-change check
    level_ref_at: float | None = None  # when that reference was taken (re-taken after each move)
    flow_ok_at: float | None = None  # last time flow was good (or switch-on)
    unavailable: tuple[str, ...] = ()  # sensors unavailable right now
    unavailable_since: float | None = None
    alerted_unavailable: tuple[str, ...] = ()  # sensors named by the active biz_sensor_unavailable
    latched: tuple[str, ...] = ()  # critical codes raised and not yet reset by an operator
    no_circulation_alerted: bool = False  # biz_no_circulation raised for this OFF stretch

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "on_since": self.on_since,
            "off_since": self.off_since,
            "level_at_on": self.level_at_on,
            "level_ref_at": self.level_ref_at,
            "flow_ok_at": self.flow_ok_at,
            "unavailable": list(self.unavailable),
            "unavailable_since": self.unavailable_since,
            "alerted_unavailable": list(self.alerted_unavailable),
            "latched": list(self.latched),
            "no_circulation_alerted": self.no_circulation_alerted,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> ChannelSafetyState:
        """Inverse of ``to_dict``; missing keys take their defaults."""
        return cls(
            on_since=opt_float(d.get("on_since")),
            off_since=opt_float(d.get("off_since")),
            level_at_on=opt_float(d.get("level_at_on")),
            level_ref_at=opt_float(d.get("level_ref_at")),
            flow_ok_at=opt_float(d.get("flow_ok_at")),
            unavailable=str_tuple(d.get("unavailable", ())),
            unavailable_since=opt_float(d.get("unavailable_since")),
            alerted_unavailable=str_tuple(d.get("alerted_unavailable", ())),
            latched=str_tuple(d.get("latched", ())),
            no_circulation_alerted=bool(d.get("no_circulation_alerted", False)),
        )


@dataclass(frozen=True)
class _Readings:
    current: float | None
    flow: float | None
    level: float | None


def _read(inputs: ChannelInputs, limits: ChannelLimits) -> _Readings:
    stale = limits.stale_after_s
    return _Readings(
        current=fresh(inputs.current_a, inputs.current_age_s, stale) if limits.current_sensor else None,
        flow=fresh(inputs.flow_l_min, inputs.flow_age_s, stale) if limits.flow_sensor else None,
        level=fresh(inputs.water_level, inputs.level_age_s, stale) if limits.level_sensor else None,
    )


def _missing(r: _Readings, limits: ChannelLimits) -> tuple[str, ...]:
    wired = (
        (Sensor.CURRENT, limits.current_sensor, r.current),
        (Sensor.FLOW, limits.flow_sensor, r.flow),
        (Sensor.LEVEL, limits.level_sensor, r.level),
    )
    return tuple(str(s) for s, configured, value in wired if configured and value is None)


def _blind(r: _Readings, limits: ChannelLimits) -> tuple[Sensor, ...]:
    out: list[Sensor] = []
    if limits.current_sensor and r.current is None:
        out.append(Sensor.CURRENT)
    level_fallback = limits.level_change_min is not None and r.level is not None
    if limits.flow_sensor and r.flow is None and not level_fallback:
        out.append(Sensor.FLOW)
    level_needed = limits.min_water_level is not None or (
        not limits.flow_sensor and limits.level_change_min is not None
    )
    if limits.level_sensor and r.level is None and level_needed:
        out.append(Sensor.LEVEL)
    return tuple(out)


def blind_sensors(inputs: ChannelInputs, limits: ChannelLimits) -> tuple[Sensor, ...]:
    """Sensors whose absence leaves a protection of this channel blind (pass to the interlock)."""
    return _blind(_read(inputs, limits), limits)


def operator_reset(state: ChannelSafetyState) -> ChannelSafetyState:
    """State after the operator's "Reset safety lock": latches cleared, timers restarted."""
    return replace(
        state,
        latched=(),
        on_since=None,
        off_since=None,
        level_at_on=None,
        level_ref_at=None,
        no_circulation_alerted=False,
    )


def evaluate(
    state: ChannelSafetyState, inputs: ChannelInputs, limits: ChannelLimits, now: float
) -> tuple[ChannelSafetyState, list[SafetyAction]]:
    """One safety tick for one channel: new state and the actions to carry out, in order."""
    r = _read(inputs, limits)
    state = _track_relay(state, inputs.relay_on, r.level, now)
    state, actions = _track_availability(state, _missing(r, limits), limits, now)
    if inputs.relay_on and state.no_circulation_alerted:
        state = replace(state, no_circulation_alerted=False)
        actions = [*actions, ResolveAlert(BIZ_NO_CIRCULATION, scope=limits.channel)]
    if inputs.relay_on:
        state, more = _check_running(state, inputs, limits, r, now)
    else:
        state, more = _check_stopped(state, inputs, limits, r, now)
        state, nc = _check_nc_off(state, inputs, limits, now)
        more = more + nc
    return state, actions + more


def _track_relay(state: ChannelSafetyState, on: bool, level: float | None, now: float) -> ChannelSafetyState:
    if on and state.on_since is None:
        return replace(
            state,
            on_since=now,
            off_since=None,
            level_at_on=level,
            level_ref_at=now if level is not None else None,
            flow_ok_at=now,
        )
    if not on and state.off_since is None:
        return replace(
            state,
            off_since=now,
            on_since=None,
            level_at_on=None,
            level_ref_at=None,
            flow_ok_at=None,
            no_circulation_alerted=False,
        )
    return state


def _track_availability(
    state: ChannelSafetyState, missing: tuple[str, ...], limits: ChannelLimits, now: float
) -> tuple[ChannelSafetyState, list[SafetyAction]]:
    if not missing:
        actions: list[SafetyAction] = []
        if state.alerted_unavailable:
            actions.append(ResolveAlert(BIZ_SENSOR_UNAVAILABLE, scope=limits.channel))
        return replace(state, unavailable=(), unavailable_since=None, alerted_unavailable=()), actions
    since = state.unavailable_since if state.unavailable_since is not None else now
    state = replace(state, unavailable=missing, unavailable_since=since)
    if now - since >= limits.unavailable_grace_s and missing != state.alerted_unavailable:
        alert = RaiseAlert(
            BIZ_SENSOR_UNAVAILABLE,
            Severity.WARNING,
            {"channel": limits.channel, "sensors": list(missing), "stale_after_s": limits.stale_after_s},
            scope=limits.channel,
        )
        return replace(state, alerted_unavailable=missing), [alert]
    return state, []


def _trip(
    state: ChannelSafetyState, code: str, limits: ChannelLimits, details: Mapping[str, object], *, lock: bool
) -> tuple[ChannelSafetyState, list[SafetyAction]]:
    actions: list[SafetyAction] = [
        StopPump(code),
        RaiseAlert(code, Severity.CRITICAL, {"channel": limits.channel, **details}, scope=limits.channel),
    ]
    if lock:
        actions.append(LockChannel(code))
    return replace(state, latched=(*state.latched, code)), actions


def _check_running(
    state: ChannelSafetyState, inputs: ChannelInputs, limits: ChannelLimits, r: _Readings, now: float
) -> tuple[ChannelSafetyState, list[SafetyAction]]:
    if state.latched:
        return state, [StopPump(state.latched[0])]
    if r.current is not None and r.current > limits.overcurrent_a:
        details = {"current_a": r.current, "threshold_a": limits.overcurrent_a}
        return _trip(state, BIZ_OVERCURRENT, limits, details, lock=True)
    if r.level is not None and limits.min_water_level is not None and r.level < limits.min_water_level:
        details = {"water_level": r.level, "min_level": limits.min_water_level}
        return _trip(state, BIZ_DRY_RUN, limits, details, lock=False)
    state = _move_level_ref(state, limits, r.level, now)
    no_flow = _no_flow(state, limits, r, now)
    if no_flow is not None:
        return _trip(state, BIZ_NO_FLOW, limits, no_flow, lock=True)
    if r.flow is not None and r.flow >= limits.min_flow_l_min:
        state = replace(state, flow_ok_at=now)
    blind = _blind(r, limits)
    if (
        blind
        and limits.fail_safe is FailSafe.NO
        and state.unavailable_since is not None
        and now - state.unavailable_since >= limits.unavailable_grace_s
    ):
        return state, [StopPump(BIZ_SENSOR_UNAVAILABLE)]
    return state, []


def _move_level_ref(
    state: ChannelSafetyState, limits: ChannelLimits, level: float | None, now: float
) -> ChannelSafetyState:
    if limits.level_change_min is None or level is None:
        return state
    if state.level_at_on is None or state.level_ref_at is None:
        return replace(state, level_at_on=level, level_ref_at=now)
    if abs(level - state.level_at_on) >= limits.level_change_min:
        return replace(state, level_at_on=level, level_ref_at=now)
    return state


def _no_flow(state: ChannelSafetyState, limits: ChannelLimits, r: _Readings, now: float) -> dict[str, object] | None:
    grace = limits.no_flow_grace_s
    if r.flow is not None:
        ok_at = state.flow_ok_at if state.flow_ok_at is not None else now
        if r.flow < limits.min_flow_l_min and now - ok_at > grace:
            return {"variant": "flow", "flow_l_min": r.flow, "min_flow_l_min": limits.min_flow_l_min}
        return None
    level_check = limits.level_change_min is not None and r.level is not None
    if level_check and state.level_ref_at is not None and now - state.level_ref_at > grace:
        return {
            "variant": "level",
            "level_at_start": state.level_at_on,
            "water_level": r.level,
            "level_change_min": limits.level_change_min,
            "window_s": grace,
        }
    return None


def _check_stopped(
    state: ChannelSafetyState, inputs: ChannelInputs, limits: ChannelLimits, r: _Readings, now: float
) -> tuple[ChannelSafetyState, list[SafetyAction]]:
    if BIZ_PUMP_STUCK_ON in state.latched or state.off_since is None:
        return state, []
    settled_at = state.off_since + limits.settle_s
    if now < settled_at:
        return state, []
    # Only readings taken after the pump had time to stop count; an older one may be the run itself.
    current = r.current if _taken_after(inputs.current_age_s, now, settled_at) else None
    flow = r.flow if _taken_after(inputs.flow_age_s, now, settled_at) else None
    evidence: dict[str, object] = {}
    if current is not None and current > limits.idle_current_a:
        evidence.update(current_a=current, idle_current_a=limits.idle_current_a)
    if flow is not None and flow > limits.min_flow_l_min:
        evidence.update(flow_l_min=flow, min_flow_l_min=limits.min_flow_l_min)
    if not evidence:
        return state, []
    details = {
        "channel": limits.channel,
        "desired_on": inputs.desired_on,
        "fail_safe": str(limits.fail_safe),
        **evidence,
    }
    actions: list[SafetyAction] = [
        RaiseAlert(BIZ_PUMP_STUCK_ON, Severity.CRITICAL, details, scope=limits.channel),
        LockChannel(BIZ_PUMP_STUCK_ON),
    ]
    return replace(state, latched=(*state.latched, BIZ_PUMP_STUCK_ON)), actions


def _taken_after(age_s: float | None, now: float, moment: float) -> bool:
    return age_s is not None and now - age_s >= moment


def _check_nc_off(
    state: ChannelSafetyState, inputs: ChannelInputs, limits: ChannelLimits, now: float
) -> tuple[ChannelSafetyState, list[SafetyAction]]:
    if limits.fail_safe is not FailSafe.NC or limits.max_off_s is None or state.off_since is None:
        return state, []
    deadline = state.off_since + limits.max_off_s
    if inputs.off_allowed_until is not None:
        deadline = max(deadline, inputs.off_allowed_until)
    if now < deadline:
        return state, []
    if not state.latched:
        return state, [RestorePump("nc_max_off")]
    if state.no_circulation_alerted or BIZ_PUMP_STUCK_ON in state.latched:
        return state, []  # a welded NC relay circulates anyway
    details = {"channel": limits.channel, "off_s": round(now - state.off_since, 1), "locked_by": list(state.latched)}
    alert = RaiseAlert(BIZ_NO_CIRCULATION, Severity.CRITICAL, details, scope=limits.channel)
    return replace(state, no_circulation_alerted=True), [alert]
