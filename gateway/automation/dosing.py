"""pH/EC correction controller (automation-engine at the edge), pure: ``step(...) -> (state, actions)``.

One controller per zone and parameter. It doses only from a fresh reading, only while the solution
circulates and no safety lock is active, in small steps proportional to the error towards the middle
of the target range (``gain`` < 1 and the mixing delay keep it from overshooting). After a dose it waits
for the mixing delay and then checks that the reading moved the right way; after ``max_ineffective``
doses in a row that did not, it stops and raises ``biz_dosing_ineffective`` (until an operator resolves
it). Caps: each dose is clamped to ``max_dose_ml`` and to what is left of the per-hour and per-day
(rolling 24 h) allowance of its reagent.

pH high ⇒ ph_down; pH low ⇒ ph_up (if the zone has one); EC low ⇒ nutrient_a/nutrient_b in equal
parts; EC high cannot be corrected by dosing (the water change handles it). Independently of dosing,
``biz_{high,low}_{ph,ec}`` are raised after the reading has been outside the range for
``alert_after_s`` and resolved after it has been back inside for ``resolve_after_s``.

Times are wall-clock seconds, because dose history is persisted and must keep counting after a restart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from gateway.automation.recipes import Range
from gateway.jsonvalue import opt_float, str_tuple, to_float, to_int


class Param(StrEnum):
    """A controlled parameter (the metric name)."""

    PH = "ph"
    EC = "ec"


RAISES = {"ph_down": -1, "ph_up": +1, "nutrient_a": +1, "nutrient_b": +1}  # direction each reagent moves
NUTRIENTS = ("nutrient_a", "nutrient_b")


@dataclass(frozen=True)
class Tuning:
    """Per-parameter dosing constants."""

    ml_per_unit_100l: float  # mL that move 100 L of solution by one unit (pH or mS/cm)
    max_dose_ml: float  # per reagent per dose
    hourly_cap_ml: float  # per reagent, rolling hour
    daily_cap_ml: float  # per reagent, rolling 24 h
    response_min: float  # the reading must move at least this much the right way after a dose


@dataclass(frozen=True)
class DosingConfig:
    """Controller settings (defaults suit a 100–200 L tank with 1:10 acid and A/B concentrates)."""

    max_reading_age_s: float = 300.0
    mixing_delay_s: float = 300.0
    cooldown_s: float = 600.0
    start_fraction: float = 0.5  # dose once the reading is this far from the middle, in half-widths
    gain: float = 0.6  # fraction of the estimated correction given per dose
    min_dose_ml: float = 0.5
    max_ineffective: int = 3
    alert_after_s: float = 900.0
    resolve_after_s: float = 300.0
    ph: Tuning = Tuning(ml_per_unit_100l=10.0, max_dose_ml=5.0, hourly_cap_ml=15.0, daily_cap_ml=60.0,
                        response_min=0.02)
    ec: Tuning = Tuning(ml_per_unit_100l=50.0, max_dose_ml=20.0, hourly_cap_ml=60.0, daily_cap_ml=300.0,
                        response_min=0.02)

    def tuning(self, param: Param) -> Tuning:
        """The constants of one parameter."""
        return self.ph if param is Param.PH else self.ec


@dataclass(frozen=True)
class Sample:
    """A reading and when the gateway received it (wall seconds)."""

    value: float
    received_at: float


@dataclass(frozen=True)
class DoseRecord:
    """A dose that was sent (for the caps)."""

    reagent: str
    ml: float
    at: float


@dataclass(frozen=True)
class Inputs:
    """Everything one step looks at."""

    now: float
    sample: Sample | None
    target: Range | None
    circulating: bool
    locked: bool
    reagents: frozenset[str]  # dosing actuators the zone has
    tank_volume_l: float
    history: Sequence[DoseRecord] = ()


@dataclass(frozen=True)
class ParamState:
    """The controller's memory for one zone and parameter (persisted as a dict)."""

    last_dose_at: float | None = None
    dose_reagents: tuple[str, ...] = ()
    value_at_dose: float | None = None
    check_pending: bool = False
    ineffective: int = 0
    halted: bool = False
    blocked_until: float = 0.0
    out_side: str | None = None  # "high" | "low" while outside the range
    out_since: float | None = None
    in_since: float | None = None
    alert: str | None = None  # the range alert code this controller raised

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> ParamState:
        """Inverse of ``to_dict`` (unknown keys ignored, missing ones take their defaults)."""
        default = cls()

        def opt_str(key: str) -> str | None:
            v = d.get(key)
            return None if v is None else str(v)

        return cls(
            last_dose_at=opt_float(d.get("last_dose_at")),
            dose_reagents=str_tuple(d.get("dose_reagents", ())),
            value_at_dose=opt_float(d.get("value_at_dose")),
            check_pending=bool(d.get("check_pending", default.check_pending)),
            ineffective=to_int(d.get("ineffective", default.ineffective)),
            halted=bool(d.get("halted", default.halted)),
            blocked_until=to_float(d.get("blocked_until", default.blocked_until)),
            out_side=opt_str("out_side"),
            out_since=opt_float(d.get("out_since")),
            in_since=opt_float(d.get("in_since")),
            alert=opt_str("alert"),
        )


@dataclass(frozen=True)
class Dose:
    """Send these doses now (reagent, mL); the shell calls ``dosed`` once they were accepted."""

    doses: tuple[tuple[str, float], ...]
    value: float
    target: float


@dataclass(frozen=True)
class RaiseAlert:
    """Raise (or repeat) an alert for this zone."""

    code: str
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ResolveAlert:
    """Resolve an alert this controller raised."""

    code: str


@dataclass(frozen=True)
class Capped:
    """A dose was wanted but the hourly/daily cap left less than the minimum dose."""

    reagent: str
    wanted_ml: float


Action = Dose | RaiseAlert | ResolveAlert | Capped


def used_ml(history: Sequence[DoseRecord], reagent: str, since: float) -> float:
    """mL of ``reagent`` dosed at or after ``since``."""
    return sum(r.ml for r in history if r.reagent == reagent and r.at >= since)


def step(param: Param, state: ParamState, inp: Inputs, cfg: DosingConfig) -> tuple[ParamState, list[Action]]:
    """Advance the controller of one parameter."""
    actions: list[Action] = []
    if inp.target is None:  # nothing to control (no recipe phase): drop our alert and memory
        if state.alert is not None:
            actions.append(ResolveAlert(state.alert))
        return replace(state, out_side=None, out_since=None, in_since=None, alert=None), actions
    s = inp.sample
    if s is None or inp.now - s.received_at > cfg.max_reading_age_s:
        return state, actions  # unavailable is not a value: no alert change, no dose
    state = _range_alerts(param, state, s, inp, cfg, actions)
    state = _check_effect(param, state, s, inp, cfg, actions)
    if state.halted or not inp.circulating or inp.locked or state.check_pending:
        return state, actions
    if state.last_dose_at is not None and inp.now < state.last_dose_at + cfg.cooldown_s:
        return state, actions
    if inp.now < state.blocked_until:
        return state, actions
    dose = _plan_dose(param, s.value, inp, cfg, actions)
    if dose is not None:
        actions.append(dose)
    return state, actions


def dosed(state: ParamState, dose: Dose, now: float) -> ParamState:
    """The shell sent ``dose``: start the mixing delay, cooldown and effect check."""
    return replace(state, last_dose_at=now, dose_reagents=tuple(r for r, _ in dose.doses), value_at_dose=dose.value,
                   check_pending=True)


def refused(state: ParamState, now: float, cfg: DosingConfig) -> ParamState:
    """The command path refused the dose (interlock): wait a cooldown before asking again."""
    return replace(state, blocked_until=now + cfg.cooldown_s)


def operator_reset(state: ParamState) -> ParamState:
    """The operator resolved ``biz_dosing_ineffective``: dose again."""
    return replace(state, halted=False, ineffective=0)


def _range_alerts(param: Param, state: ParamState, s: Sample, inp: Inputs, cfg: DosingConfig,
                  actions: list[Action]) -> ParamState:
    assert inp.target is not None
    side = "high" if s.value > inp.target.high else "low" if s.value < inp.target.low else None
    if side is not None:
        since = state.out_since if state.out_side == side and state.out_since is not None else inp.now
        state = replace(state, out_side=side, out_since=since, in_since=None)
        code = f"biz_{side}_{param.value}"
        if inp.now - since >= cfg.alert_after_s and state.alert != code:
            if state.alert is not None:
                actions.append(ResolveAlert(state.alert))
            actions.append(RaiseAlert(code, {"value": s.value, "low": inp.target.low, "high": inp.target.high,
                                             "outside_s": round(inp.now - since)}))
            state = replace(state, alert=code)
        return state
    in_since = state.in_since if state.in_since is not None else inp.now
    state = replace(state, out_side=None, out_since=None, in_since=in_since)
    if state.alert is not None and inp.now - in_since >= cfg.resolve_after_s:
        actions.append(ResolveAlert(state.alert))
        state = replace(state, alert=None)
    return state


def _check_effect(param: Param, state: ParamState, s: Sample, inp: Inputs, cfg: DosingConfig,
                  actions: list[Action]) -> ParamState:
    if not state.check_pending or state.last_dose_at is None or state.value_at_dose is None:
        return state
    settled = state.last_dose_at + cfg.mixing_delay_s
    if inp.now < settled or s.received_at < settled:
        return state
    direction = RAISES[state.dose_reagents[0]] if state.dose_reagents else 0
    moved = (s.value - state.value_at_dose) * direction
    if moved >= cfg.tuning(param).response_min:
        return replace(state, check_pending=False, ineffective=0)
    streak = state.ineffective + 1
    state = replace(state, check_pending=False, ineffective=streak)
    if streak >= cfg.max_ineffective:
        actions.append(RaiseAlert("biz_dosing_ineffective", {
            "parameter": param.value, "reagents": list(state.dose_reagents), "doses": streak,
            "value_before": state.value_at_dose, "value_after": s.value}))
        state = replace(state, halted=True)
    return state


def _reagents_for(param: Param, error: float, available: frozenset[str]) -> tuple[str, ...]:
    if param is Param.PH:
        return tuple(r for r in (("ph_down",) if error > 0 else ("ph_up",)) if r in available)
    if error > 0:
        return ()  # EC cannot be lowered by dosing
    return tuple(r for r in NUTRIENTS if r in available)


def _plan_dose(param: Param, value: float, inp: Inputs, cfg: DosingConfig, actions: list[Action]) -> Dose | None:
    assert inp.target is not None
    target = inp.target
    error = value - target.mid
    if abs(error) <= cfg.start_fraction * (target.high - target.low) / 2:
        return None
    reagents = _reagents_for(param, error, inp.reagents)
    if not reagents:
        return None
    tune = cfg.tuning(param)
    total = cfg.gain * abs(error) * tune.ml_per_unit_100l * inp.tank_volume_l / 100.0
    per_reagent = min(max(total / len(reagents), cfg.min_dose_ml), tune.max_dose_ml)
    doses: list[tuple[str, float]] = []
    for reagent in reagents:
        left = min(tune.hourly_cap_ml - used_ml(inp.history, reagent, inp.now - 3600.0),
                   tune.daily_cap_ml - used_ml(inp.history, reagent, inp.now - 86_400.0))
        ml = math.floor(min(per_reagent, left) * 100 + 1e-6) / 100  # 0.01 mL steps, down: never past a cap
        if ml < cfg.min_dose_ml:
            actions.append(Capped(reagent, per_reagent))
            return None  # A without B would unbalance the nutrient: all or nothing
        doses.append((reagent, ml))
    return Dose(tuple(doses), value, target.mid)
