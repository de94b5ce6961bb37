"""The pure pH/EC controller: when it doses, how much, caps, mixing delay, effect check, range alerts."""

from __future__ import annotations

from dataclasses import replace

from gateway.automation.dosing import (
    Action,
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
    used_ml,
)
from gateway.automation.recipes import Range

CFG = DosingConfig()
PH = Range(5.8, 6.2)
EC = Range(1.2, 1.6)
ALL = frozenset({"ph_down", "ph_up", "nutrient_a", "nutrient_b"})


def _inp(value: float | None, now: float = 10_000.0, *, target: Range | None = PH, age: float = 5.0,
         circulating: bool = True, locked: bool = False, reagents: frozenset[str] = ALL,
         history: tuple[DoseRecord, ...] = (), volume: float = 100.0) -> Inputs:
    sample = None if value is None else Sample(value, now - age)
    return Inputs(now, sample, target, circulating, locked, reagents, volume, history)


def _doses(actions: list[Action]) -> list[Dose]:
    return [a for a in actions if isinstance(a, Dose)]


def test_high_ph_doses_ph_down_proportionally_towards_the_middle() -> None:
    _, small = step(Param.PH, ParamState(), _inp(6.15), CFG)
    _, big = step(Param.PH, ParamState(), _inp(6.6), CFG)
    # 0.6 gain x 0.15 pH x 10 mL/pH/100 L = 0.9 mL; 0.6 x 0.6 x 10 = 3.6 mL.
    assert _doses(small) == [Dose((("ph_down", 0.9),), 6.15, 6.0)]
    assert _doses(big)[0].doses == (("ph_down", 3.6),)
    _, bigger_tank = step(Param.PH, ParamState(), _inp(6.6, volume=400), CFG)
    assert _doses(bigger_tank)[0].doses == (("ph_down", CFG.ph.max_dose_ml),)  # clamped to one small step


def test_no_dose_inside_the_dead_band_or_without_a_matching_reagent() -> None:
    assert _doses(step(Param.PH, ParamState(), _inp(6.09), CFG)[1]) == []
    assert _doses(step(Param.PH, ParamState(), _inp(5.9), CFG)[1]) == []
    low = step(Param.PH, ParamState(), _inp(5.7, reagents=frozenset({"ph_down"})), CFG)[1]
    assert _doses(low) == []  # pH low and no ph_up configured
    assert _doses(step(Param.PH, ParamState(), _inp(5.7), CFG)[1])[0].doses[0][0] == "ph_up"


def test_only_fresh_readings_while_circulating_and_unlocked() -> None:
    assert step(Param.PH, ParamState(), _inp(None), CFG) == (ParamState(), [])
    assert step(Param.PH, ParamState(), _inp(6.6, age=CFG.max_reading_age_s + 1), CFG) == (ParamState(), [])
    assert _doses(step(Param.PH, ParamState(), _inp(6.6, circulating=False), CFG)[1]) == []
    assert _doses(step(Param.PH, ParamState(), _inp(6.6, locked=True), CFG)[1]) == []
    assert _doses(step(Param.PH, ParamState(), _inp(6.6, target=None), CFG)[1]) == []


def test_ec_low_splits_between_a_and_b_and_ec_high_is_not_dosed() -> None:
    _, actions = step(Param.EC, ParamState(), _inp(1.1, target=EC), CFG)
    # 0.6 x 0.3 mS/cm x 50 mL = 9 mL, half each.
    assert _doses(actions)[0].doses == (("nutrient_a", 4.5), ("nutrient_b", 4.5))
    _, only_a = step(Param.EC, ParamState(), _inp(1.1, target=EC, reagents=frozenset({"nutrient_a"})), CFG)
    assert _doses(only_a)[0].doses == (("nutrient_a", 9.0),)
    assert _doses(step(Param.EC, ParamState(), _inp(2.4, target=EC), CFG)[1]) == []


def test_mixing_delay_and_cooldown_hold_the_next_dose() -> None:
    t0 = 10_000.0
    state, actions = step(Param.PH, ParamState(), _inp(6.5, t0), CFG)
    state = dosed(state, _doses(actions)[0], t0)
    # During mixing nothing happens, even with the reading still high.
    assert _doses(step(Param.PH, state, _inp(6.5, t0 + 100), CFG)[1]) == []
    # After mixing the effect is checked (moved 0.1 down: effective), then the cooldown still holds.
    state, actions = step(Param.PH, state, _inp(6.4, t0 + CFG.mixing_delay_s + 10), CFG)
    assert not state.check_pending and state.ineffective == 0 and _doses(actions) == []
    state, actions = step(Param.PH, state, _inp(6.4, t0 + CFG.cooldown_s), CFG)
    assert _doses(actions)[0].doses[0][0] == "ph_down"


def test_effect_is_judged_only_on_a_reading_taken_after_mixing() -> None:
    t0 = 10_000.0
    state = dosed(ParamState(), Dose((("ph_down", 1.0),), 6.5, 6.0), t0)
    # The reading is old (received before the mixing delay ended): no verdict yet.
    state2, _ = step(Param.PH, state, _inp(6.5, t0 + CFG.mixing_delay_s + 50, age=100), CFG)
    assert state2.check_pending and state2.ineffective == 0


def test_ineffective_doses_stop_dosing_with_an_alert_until_the_operator_resets() -> None:
    t, state = 10_000.0, ParamState()
    raised: list[RaiseAlert] = []
    for _ in range(CFG.max_ineffective):
        state, actions = step(Param.PH, state, _inp(6.5, t), CFG)
        raised += [a for a in actions if isinstance(a, RaiseAlert) and a.code == "biz_dosing_ineffective"]
        state = dosed(state, _doses(actions)[0], t)
        t += CFG.cooldown_s
    state, actions = step(Param.PH, state, _inp(6.5, t), CFG)  # third verdict: nothing moved
    raised += [a for a in actions if isinstance(a, RaiseAlert) and a.code == "biz_dosing_ineffective"]
    assert state.halted and len(raised) == 1 and raised[0].details["doses"] == CFG.max_ineffective
    assert _doses(actions) == []
    assert _doses(step(Param.PH, state, _inp(6.5, t + 10_000), CFG)[1]) == []  # stays stopped
    state = operator_reset(state)
    assert _doses(step(Param.PH, state, _inp(6.5, t + 10_000), CFG)[1])


def test_an_effective_dose_resets_the_ineffective_streak() -> None:
    state = replace(dosed(ParamState(), Dose((("nutrient_a", 2.0),), 1.0, 1.4), 0.0), ineffective=2)
    state, _ = step(Param.EC, state, _inp(1.05, CFG.mixing_delay_s + 1, target=EC, age=0), CFG)
    assert state.ineffective == 0 and not state.halted


def test_hourly_and_daily_caps_are_never_exceeded() -> None:
    now = 100_000.0
    cfg = CFG
    hour = tuple(DoseRecord("ph_down", 5.0, now - 600 * i) for i in range(1, 3))  # 10 of 15 mL this hour
    _, actions = step(Param.PH, ParamState(), _inp(7.5, now, history=hour), cfg)
    assert _doses(actions)[0].doses == (("ph_down", 5.0),)  # exactly fills the hour
    full_hour = (*hour, DoseRecord("ph_down", 4.8, now - 60))
    _, actions = step(Param.PH, ParamState(), _inp(6.7, now, history=full_hour), cfg)
    assert _doses(actions) == [] and any(isinstance(a, Capped) for a in actions)
    day = tuple(DoseRecord("ph_down", 5.0, now - 3600 * (i + 2)) for i in range(12))  # 60 mL over 24 h
    _, actions = step(Param.PH, ParamState(), _inp(6.7, now, history=day), cfg)
    assert _doses(actions) == []
    assert used_ml(day, "ph_down", now - 86_400) == 60.0
    # A partial allowance is given, rounded down.
    almost = (DoseRecord("ph_down", 14.337, now - 60),)
    _, actions = step(Param.PH, ParamState(), _inp(6.7, now, history=almost), cfg)
    assert _doses(actions)[0].doses == (("ph_down", 0.66),)


def test_refused_dose_waits_a_cooldown() -> None:
    state = refused(ParamState(), 1000.0, CFG)
    assert _doses(step(Param.PH, state, _inp(6.6, 1000.0 + CFG.cooldown_s - 1), CFG)[1]) == []
    assert _doses(step(Param.PH, state, _inp(6.6, 1000.0 + CFG.cooldown_s), CFG)[1])


def test_range_alerts_raise_after_hysteresis_and_resolve_after_settling() -> None:
    t, state = 0.0, ParamState()
    codes: list[str] = []

    def run(value: float, until: float, target: Range = EC) -> None:
        nonlocal t, state
        while t < until:
            state, actions = step(Param.EC, state, _inp(value, t, target=target), CFG)
            codes.extend(f"+{a.code}" if isinstance(a, RaiseAlert) else f"-{a.code}" for a in actions
                         if isinstance(a, RaiseAlert | ResolveAlert))
            t += 60

    run(2.0, CFG.alert_after_s - 60)
    assert codes == []  # not yet: out of range for less than the hysteresis time
    run(2.0, CFG.alert_after_s + 60)
    assert codes == ["+biz_high_ec"]
    run(1.4, t + CFG.resolve_after_s - 120)
    run(2.0, t + 120)  # a blip back out restarts nothing (alert still active)
    assert codes == ["+biz_high_ec"]
    run(1.4, t + CFG.resolve_after_s + 60)
    assert codes == ["+biz_high_ec", "-biz_high_ec"]
    run(0.5, t + CFG.alert_after_s + 60)
    assert codes[-1] == "+biz_low_ec"
    state, actions = step(Param.EC, state, _inp(0.5, t, target=None), CFG)
    assert actions == [ResolveAlert("biz_low_ec")] and state.alert is None


def test_state_round_trips_through_a_dict() -> None:
    state = dosed(ParamState(alert="biz_high_ph"), Dose((("nutrient_a", 1.0), ("nutrient_b", 1.0)), 1.0, 1.4), 5.0)
    assert ParamState.from_dict(state.to_dict()) == state
