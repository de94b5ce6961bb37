"""Water-change state machine (seed 003 §10.3, §13): NORMAL_RECIRC → DRAIN → FILL → STABILIZE → NORMAL_RECIRC.

``step(state, inputs, cfg, now_wall, local_now)`` is pure; the async shell feeds it readings, the
interlock's verdicts and operator requests, and carries out the returned actions in order. Times
are wall-clock seconds because the state is persisted and must mean something after a restart.

* Triggers in NORMAL_RECIRC: operator start (any time, even with automatic changes disabled);
  solution older than ``max_solution_age_days`` (any time of day); ``interval_days`` calendar days
  since the solution was made and local time ≥ ``time_of_day``; EC drifted more than
  ``ec_drift_threshold`` % from ``ec_at_start`` for ``ec_drift_confirm_minutes``. Automatic triggers
  start at most once per local day and wait (no state change) while the level is unavailable or
  the interlock refuses the drain pump, so a broken sensor never stops circulation for nothing.
  An operator start in that situation fails at once (``level_unavailable`` / ``interlock:<reason>``)
  so the operator sees why; a tank already at ``empty_level`` skips straight to FILL.
* DRAIN: recirc OFF, drain ON until level ≤ ``empty_level``; FILL: drain OFF, fill ON until level ≥
  ``target_level``; STABILIZE: fill OFF, recirc ON, wait ``stabilize_minutes``, then record the new
  solution (``solution_started_at``, ``ec_at_start``) and ``WATER_CHANGE_COMPLETED``.
* A missing/stale level during DRAIN/FILL switches the working pump off and waits (never runs
  blind) until the level returns or the step times out. Timeout or interlock refusal ⇒ FAILED:
  every pump off, recirc back to its fail-safe ON, ``biz_water_change_failed``; only the operator's
  acknowledgement leaves FAILED. Operator abort ⇒ pumps off, recirc ON, back to NORMAL_RECIRC.
* ``resume`` after a restart never continues a drain or fill it cannot vouch for: DRAIN/FILL become
  FAILED ("interrupted_by_restart"), as seed 003 §13.2 asks after an electronics failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from gateway.jsonvalue import opt_float, to_float
from gateway.safety.rules import RaiseAlert, ResolveAlert, Severity, fresh
from gateway.water.config import WaterChangeConfig, WaterCycleConfig, WaterMode

BIZ_WATER_CHANGE_FAILED = "biz_water_change_failed"
DAY_S = 86_400.0


class WaterPhase(StrEnum):
    """Phase of a zone's water."""

    NORMAL_RECIRC = "NORMAL_RECIRC"
    WATER_CHANGE_DRAIN = "WATER_CHANGE_DRAIN"
    WATER_CHANGE_FILL = "WATER_CHANGE_FILL"
    WATER_CHANGE_STABILIZE = "WATER_CHANGE_STABILIZE"
    FAILED = "FAILED"

    @property
    def owns_recirc(self) -> bool:
        """Whether this machine, not ``decide_recirc``, drives the recirculation pump."""
        return self is not WaterPhase.NORMAL_RECIRC


CHANGE_PHASES = frozenset(
    {WaterPhase.WATER_CHANGE_DRAIN, WaterPhase.WATER_CHANGE_FILL, WaterPhase.WATER_CHANGE_STABILIZE}
)
"""The phases of a running water change (what an operator may abort)."""


class PumpRole(StrEnum):
    """The pumps a water change uses."""

    RECIRC = "recirc"
    DRAIN = "drain"
    FILL = "fill"


class Trigger(StrEnum):
    """Why a water change started."""

    OPERATOR = "operator"
    SOLUTION_AGE = "solution_age"
    SCHEDULE = "schedule"
    EC_DRIFT = "ec_drift"


class WaterEvent(StrEnum):
    """Zone event types recorded by the machine."""

    STARTED = "WATER_CHANGE_STARTED"
    PHASE = "WATER_CHANGE_PHASE"
    COMPLETED = "WATER_CHANGE_COMPLETED"
    FAILED = "WATER_CHANGE_FAILED"
    ABORTED = "WATER_CHANGE_ABORTED"
    ACKNOWLEDGED = "WATER_CHANGE_ACKNOWLEDGED"


class OperatorRequest(StrEnum):
    """What an operator may ask of a zone's water machine (web form, JSON API); carried out on the next tick."""

    START = "start"
    ABORT = "abort"
    ACK = "ack"

    @property
    def event(self) -> WaterEvent:
        """The zone event that records this request being carried out (it names who asked)."""
        return {
            OperatorRequest.START: WaterEvent.STARTED,
            OperatorRequest.ABORT: WaterEvent.ABORTED,
            OperatorRequest.ACK: WaterEvent.ACKNOWLEDGED,
        }[self]


@dataclass(frozen=True)
class SetPump:
    """Switch a pump ON/OFF (pump terms; starts still pass the shell's interlock)."""

    channel_role: PumpRole
    on: bool


@dataclass(frozen=True)
class RecordEvent:
    """Append a zone event."""

    type: WaterEvent
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class PersistState:
    """Save the returned state before acting further (it must survive a restart)."""


WaterAction = SetPump | RaiseAlert | ResolveAlert | RecordEvent | PersistState


@dataclass(frozen=True)
class WaterInputs:
    """One tick's readings, interlock verdicts and operator requests; None means unavailable."""

    water_level: float | None = None
    level_age_s: float | None = None
    ec: float | None = None
    ec_age_s: float | None = None
    can_run_drain: bool = True
    can_run_fill: bool = True
    operator_start: bool = False
    operator_abort: bool = False
    operator_ack_failed: bool = False
    interlock_reason: str | None = None  # why can_run_* is false, from can_run_pump


@dataclass(frozen=True)
class WaterState:
    """Persisted water state of a zone (wall-clock seconds)."""

    phase: WaterPhase = WaterPhase.NORMAL_RECIRC
    phase_started_at_wall: float = 0.0
    solution_started_at: float | None = None
    ec_at_start: float | None = None
    last_error: str | None = None
    trigger: Trigger | None = None
    change_started_at_wall: float | None = None
    last_auto_start_date: str | None = None  # ISO local date of the last automatic start
    ec_drift_since: float | None = None
    pump_on: bool = False  # the DRAIN/FILL working pump is commanded ON

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "phase": self.phase.value,
            "phase_started_at_wall": self.phase_started_at_wall,
            "solution_started_at": self.solution_started_at,
            "ec_at_start": self.ec_at_start,
            "last_error": self.last_error,
            "trigger": None if self.trigger is None else self.trigger.value,
            "change_started_at_wall": self.change_started_at_wall,
            "last_auto_start_date": self.last_auto_start_date,
            "ec_drift_since": self.ec_drift_since,
            "pump_on": self.pump_on,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> WaterState:
        """Inverse of ``to_dict``; raises ValueError on an unknown phase or trigger."""

        def f(key: str) -> float | None:
            return opt_float(d.get(key))

        trigger = d.get("trigger")
        last_error = d.get("last_error")
        date = d.get("last_auto_start_date")
        return cls(
            phase=WaterPhase(str(d.get("phase", WaterPhase.NORMAL_RECIRC.value))),
            phase_started_at_wall=to_float(d.get("phase_started_at_wall", 0.0)),
            solution_started_at=f("solution_started_at"),
            ec_at_start=f("ec_at_start"),
            last_error=None if last_error is None else str(last_error),
            trigger=None if trigger is None else Trigger(str(trigger)),
            change_started_at_wall=f("change_started_at_wall"),
            last_auto_start_date=None if date is None else str(date),
            ec_drift_since=f("ec_drift_since"),
            pump_on=bool(d.get("pump_on", False)),
        )


Step = tuple[WaterState, list[WaterAction]]


def step(state: WaterState, inputs: WaterInputs, cfg: WaterCycleConfig, now_wall: float, local_now: datetime) -> Step:
    """One tick of the machine; ``local_now`` is aware greenhouse-local time (for the schedule)."""
    if now_wall < state.phase_started_at_wall:  # wall clock stepped back: restart the step's timer
        state = replace(state, phase_started_at_wall=now_wall)
    wc = cfg.water_change
    if state.phase is WaterPhase.NORMAL_RECIRC:
        new, actions = _normal(state, inputs, cfg, now_wall, local_now)
    elif state.phase is WaterPhase.WATER_CHANGE_DRAIN:
        new, actions = _drain(state, inputs, wc, now_wall)
    elif state.phase is WaterPhase.WATER_CHANGE_FILL:
        new, actions = _fill(state, inputs, wc, now_wall)
    elif state.phase is WaterPhase.WATER_CHANGE_STABILIZE:
        new, actions = _stabilize(state, inputs, wc, now_wall)
    else:
        new, actions = _failed(state, inputs)
    return _persisting(state, new, actions)


def resume(state: WaterState, now_wall: float) -> Step:
    """Safe actions at start-up for a persisted state; DRAIN/FILL become FAILED."""
    pumps_off: list[WaterAction] = [SetPump(PumpRole.DRAIN, False), SetPump(PumpRole.FILL, False)]
    if state.phase is WaterPhase.NORMAL_RECIRC:
        return state, pumps_off  # recirc belongs to decide_recirc in this phase
    if state.phase in (WaterPhase.WATER_CHANGE_DRAIN, WaterPhase.WATER_CHANGE_FILL):
        return _persisting(state, *_fail(state, "interrupted_by_restart", now_wall))
    new = replace(state, pump_on=False)
    return _persisting(state, new, [*pumps_off, SetPump(PumpRole.RECIRC, True)])


def _persisting(old: WaterState, new: WaterState, actions: list[WaterAction]) -> Step:
    if new != old:
        actions = [*actions, PersistState()]
    return new, actions


def _level(inputs: WaterInputs, wc: WaterChangeConfig) -> float | None:
    return fresh(inputs.water_level, inputs.level_age_s, wc.stale_after_s)


def _ec(inputs: WaterInputs, wc: WaterChangeConfig) -> float | None:
    return fresh(inputs.ec, inputs.ec_age_s, wc.stale_after_s)


def _enter(state: WaterState, phase: WaterPhase, now: float) -> tuple[WaterState, RecordEvent]:
    event = RecordEvent(WaterEvent.PHASE, {"from": state.phase.value, "to": phase.value})
    return replace(state, phase=phase, phase_started_at_wall=now, pump_on=False), event


# NORMAL_RECIRC -----------------------------------------------------------------------------


def _normal(state: WaterState, inputs: WaterInputs, cfg: WaterCycleConfig, now: float, local: datetime) -> Step:
    wc = cfg.water_change
    ec = _ec(inputs, wc)
    if state.solution_started_at is None:  # first sight of this zone: the solution in the tank is "now"
        state = replace(state, solution_started_at=now)
    if state.ec_at_start is None and ec is not None:
        state = replace(state, ec_at_start=ec)
    state = _track_ec_drift(state, ec, wc, now)
    if inputs.operator_start:
        return _start(state, Trigger.OPERATOR, inputs, wc, now, local)
    auto = cfg.mode is WaterMode.RECIRCULATING and wc.enabled
    today = local.date().isoformat()
    if not auto or state.last_auto_start_date == today:
        return state, []
    trigger = _auto_trigger(state, wc, now, local)
    if trigger is None or _level(inputs, wc) is None or not inputs.can_run_drain:
        return state, []  # not due, or due but blocked: wait without touching anything
    return _start(replace(state, last_auto_start_date=today), trigger, inputs, wc, now, local)


def _track_ec_drift(state: WaterState, ec: float | None, wc: WaterChangeConfig, now: float) -> WaterState:
    if ec is None:
        return state  # unknown: keep the drift timer as it was
    base = state.ec_at_start
    drifting = base is not None and base > 0 and abs(ec - base) / base * 100 > wc.ec_drift_threshold
    if not drifting:
        return replace(state, ec_drift_since=None)
    if state.ec_drift_since is None:
        return replace(state, ec_drift_since=now)
    return state


def _auto_trigger(state: WaterState, wc: WaterChangeConfig, now: float, local: datetime) -> Trigger | None:
    started = state.solution_started_at
    if started is None:
        return None
    if now - started > wc.max_solution_age_days * DAY_S:
        return Trigger.SOLUTION_AGE
    started_day = datetime.fromtimestamp(started, local.tzinfo).date()
    days = (local.date() - started_day).days
    if days >= wc.interval_days and local.time() >= wc.time_of_day:
        return Trigger.SCHEDULE
    since = state.ec_drift_since
    if wc.trigger_by_ec_drift and since is not None and now - since >= wc.ec_drift_confirm_minutes * 60:
        return Trigger.EC_DRIFT
    return None


def _start(
    state: WaterState,
    trigger: Trigger,
    inputs: WaterInputs,
    wc: WaterChangeConfig,
    now: float,
    local: datetime,
) -> Step:
    details = {
        "trigger": trigger.value,
        "water_level": _level(inputs, wc),
        "ec": _ec(inputs, wc),
        "solution_started_at": state.solution_started_at,
        "local_time": local.isoformat(),
    }
    state = replace(state, trigger=trigger, change_started_at_wall=now, last_error=None, ec_drift_since=None)
    started = RecordEvent(WaterEvent.STARTED, details)
    # Refuse up front rather than switch recirc off and straight back on.
    level = _level(inputs, wc)
    refusal = None
    if level is None:
        refusal = "level_unavailable"
    elif level > wc.empty_level and not inputs.can_run_drain:
        refusal = f"interlock:{inputs.interlock_reason or 'drain_refused'}"
    if refusal is not None:
        failed, failing = _fail(state, refusal, now)
        return failed, [started, *failing]
    state, entered = _enter(state, WaterPhase.WATER_CHANGE_DRAIN, now)
    new, more = _drain(state, inputs, wc, now)
    return new, [started, entered, SetPump(PumpRole.RECIRC, False), *more]


# DRAIN / FILL ------------------------------------------------------------------------------


def _drain(state: WaterState, inputs: WaterInputs, wc: WaterChangeConfig, now: float) -> Step:
    level = _level(inputs, wc)
    return _working(
        state,
        inputs,
        now,
        role=PumpRole.DRAIN,
        timeout_s=wc.drain_timeout_min * 60,
        done=level is not None and level <= wc.empty_level,
        level=level,
        can_run=inputs.can_run_drain,
        advance=lambda s: _to_fill(s, inputs, wc, now),
    )


def _fill(state: WaterState, inputs: WaterInputs, wc: WaterChangeConfig, now: float) -> Step:
    level = _level(inputs, wc)
    return _working(
        state,
        inputs,
        now,
        role=PumpRole.FILL,
        timeout_s=wc.fill_timeout_min * 60,
        done=level is not None and level >= wc.target_level,
        level=level,
        can_run=inputs.can_run_fill,
        advance=lambda s: _to_stabilize(s, now),
    )


def _working(
    state: WaterState,
    inputs: WaterInputs,
    now: float,
    *,
    role: PumpRole,
    timeout_s: float,
    done: bool,
    level: float | None,
    can_run: bool,
    advance: Callable[[WaterState], Step],
) -> Step:
    if inputs.operator_abort:
        return _abort(state, now)
    if now - state.phase_started_at_wall >= timeout_s:
        return _fail(state, f"{role.value}_timeout", now)
    if level is None:  # never run blind: stop the working pump and wait for the level (or the timeout)
        if not state.pump_on:
            return state, []
        return replace(state, pump_on=False), [SetPump(role, False)]
    if done:
        return advance(replace(state, pump_on=False))
    if not can_run:
        return _fail(state, f"interlock:{inputs.interlock_reason or role.value + '_refused'}", now)
    if not state.pump_on:  # phase entry, or the level came back after a pause
        return replace(state, pump_on=True), [SetPump(role, True)]
    return state, []


def _to_fill(state: WaterState, inputs: WaterInputs, wc: WaterChangeConfig, now: float) -> Step:
    state, entered = _enter(state, WaterPhase.WATER_CHANGE_FILL, now)
    new, more = _fill(state, inputs, wc, now)
    return new, [SetPump(PumpRole.DRAIN, False), entered, *more]


def _to_stabilize(state: WaterState, now: float) -> Step:
    state, entered = _enter(state, WaterPhase.WATER_CHANGE_STABILIZE, now)
    return state, [SetPump(PumpRole.FILL, False), entered, SetPump(PumpRole.RECIRC, True)]


# STABILIZE / FAILED / abort ----------------------------------------------------------------


def _stabilize(state: WaterState, inputs: WaterInputs, wc: WaterChangeConfig, now: float) -> Step:
    if inputs.operator_abort:
        # The tank already holds the new solution; only the settling wait is cut short.
        return _abort(replace(state, solution_started_at=now, ec_at_start=_ec(inputs, wc)), now)
    if now - state.phase_started_at_wall < wc.stabilize_minutes * 60:
        return state, []
    ec = _ec(inputs, wc)
    details = {
        "trigger": None if state.trigger is None else state.trigger.value,
        "duration_s": None if state.change_started_at_wall is None else now - state.change_started_at_wall,
        "water_level": _level(inputs, wc),
        "ec": ec,
    }
    new = replace(
        state,
        phase=WaterPhase.NORMAL_RECIRC,
        phase_started_at_wall=now,
        solution_started_at=now,
        ec_at_start=ec,
        trigger=None,
        change_started_at_wall=None,
        ec_drift_since=None,
        pump_on=False,
    )
    return new, [RecordEvent(WaterEvent.COMPLETED, details)]


def _all_safe() -> list[WaterAction]:
    return [SetPump(PumpRole.DRAIN, False), SetPump(PumpRole.FILL, False), SetPump(PumpRole.RECIRC, True)]


def _fail(state: WaterState, reason: str, now: float) -> Step:
    details = {"phase": state.phase.value, "reason": reason}
    new = replace(state, phase=WaterPhase.FAILED, phase_started_at_wall=now, last_error=reason, pump_on=False)
    return new, [
        *_all_safe(),
        RaiseAlert(BIZ_WATER_CHANGE_FAILED, Severity.CRITICAL, details),
        RecordEvent(WaterEvent.FAILED, details),
    ]


def _abort(state: WaterState, now: float) -> Step:
    details = {"phase": state.phase.value}
    new = replace(
        state,
        phase=WaterPhase.NORMAL_RECIRC,
        phase_started_at_wall=now,
        trigger=None,
        change_started_at_wall=None,
        pump_on=False,
    )
    return new, [*_all_safe(), RecordEvent(WaterEvent.ABORTED, details)]


def _failed(state: WaterState, inputs: WaterInputs) -> Step:
    if not inputs.operator_ack_failed:
        return state, []
    new = replace(state, phase=WaterPhase.NORMAL_RECIRC, trigger=None, change_started_at_wall=None, pump_on=False)
    return new, [
        ResolveAlert(BIZ_WATER_CHANGE_FAILED),
        RecordEvent(WaterEvent.ACKNOWLEDGED, {"last_error": state.last_error}),
    ]
