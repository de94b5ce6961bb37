"""Water-change state machine: every trigger, transition, timeout and restart, under explicit times."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.safety.rules import RaiseAlert, ResolveAlert, Severity
from gateway.water.config import WaterCycleConfig, water_cycle_from_dict
from gateway.water.cycle import (
    BIZ_WATER_CHANGE_FAILED,
    PersistState,
    PumpRole,
    RecordEvent,
    SetPump,
    Step,
    Trigger,
    WaterEvent,
    WaterInputs,
    WaterPhase,
    WaterState,
    resume,
    step,
)

MSK = ZoneInfo("Europe/Moscow")
CFG = water_cycle_from_dict(
    {
        "water_change": {
            "enabled": True,
            "interval_days": 7,
            "time_of_day": "09:00",
            "max_solution_age_days": 10,
            "trigger_by_ec_drift": True,
            "ec_drift_threshold": 30,
            "ec_drift_confirm_minutes": 30,
            "empty_level": 5,
            "target_level": 90,
            "drain_timeout_min": 30,
            "fill_timeout_min": 20,
            "stabilize_minutes": 15,
            "stale_after_s": 60,
        }
    }
)
DRAIN, FILL, STAB = (
    WaterPhase.WATER_CHANGE_DRAIN,
    WaterPhase.WATER_CHANGE_FILL,
    WaterPhase.WATER_CHANGE_STABILIZE,
)
NORMAL, FAILED = WaterPhase.NORMAL_RECIRC, WaterPhase.FAILED
RECIRC_OFF, RECIRC_ON = SetPump(PumpRole.RECIRC, False), SetPump(PumpRole.RECIRC, True)
SAFE = [SetPump(PumpRole.DRAIN, False), SetPump(PumpRole.FILL, False), RECIRC_ON]


def at(day: int, hh: int = 0, mm: int = 0, ss: int = 0) -> float:
    """Wall time: local day ``day`` after 2026-01-05 at hh:mm:ss Moscow time."""
    base = datetime(2026, 1, 5, tzinfo=MSK)
    return (base + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)).timestamp()


def inp(level: float | None = 60.0, ec: float | None = 1.9, **kw: Any) -> WaterInputs:
    return WaterInputs(
        water_level=level,
        level_age_s=None if level is None else 2.0,
        ec=ec,
        ec_age_s=None if ec is None else 2.0,
        **kw,
    )


def run(state: WaterState, inputs: WaterInputs, wall: float, cfg: WaterCycleConfig = CFG) -> Step:
    return step(state, inputs, cfg, wall, datetime.fromtimestamp(wall, MSK))


FRESH = WaterState(phase_started_at_wall=at(0, 10), solution_started_at=at(0, 10), ec_at_start=2.0)


def in_phase(phase: WaterPhase, started: float, **kw: Any) -> WaterState:
    return replace(
        FRESH,
        phase=phase,
        phase_started_at_wall=started,
        trigger=Trigger.OPERATOR,
        change_started_at_wall=started,
        **kw,
    )


def kinds(actions: list[Any]) -> list[Any]:
    """Action list with event details dropped (types of events kept)."""
    return [a.type if isinstance(a, RecordEvent) else a for a in actions]


# NORMAL_RECIRC triggers ------------------------------------------------------------------


def test_first_tick_adopts_solution_start_and_ec() -> None:
    state, actions = run(WaterState(), inp(ec=1.7), at(0, 10))
    assert (state.solution_started_at, state.ec_at_start) == (at(0, 10), 1.7)
    assert actions == [PersistState()]
    assert run(state, inp(ec=1.7), at(0, 11)) == (state, [])


def test_schedule_trigger_waits_for_interval_days_and_time_of_day() -> None:
    assert run(FRESH, inp(), at(6, 9)) == (FRESH, [])  # only 6 days
    assert run(FRESH, inp(), at(7, 8, 59, 59)) == (FRESH, [])  # 7 days but before 09:00
    state, actions = run(FRESH, inp(), at(7, 9))
    assert state.phase is DRAIN and state.trigger is Trigger.SCHEDULE and state.pump_on
    assert kinds(actions) == [
        WaterEvent.STARTED,
        WaterEvent.PHASE,
        RECIRC_OFF,
        SetPump(PumpRole.DRAIN, True),
        PersistState(),
    ]
    started = actions[0]
    assert isinstance(started, RecordEvent)
    assert started.details["trigger"] == "schedule" and started.details["water_level"] == 60.0
    phase = actions[1]
    assert isinstance(phase, RecordEvent)
    assert phase.details == {"from": "NORMAL_RECIRC", "to": "WATER_CHANGE_DRAIN"}


def test_missed_time_of_day_runs_later_the_same_day() -> None:
    state, _ = run(FRESH, inp(), at(7, 15, 30))
    assert state.phase is DRAIN


def test_solution_age_triggers_at_any_time_of_day() -> None:
    long_interval = water_cycle_from_dict({"water_change": {"enabled": True, "interval_days": 30}})
    assert run(FRESH, inp(), at(10, 3), long_interval)[0].phase is NORMAL  # exactly 10 days minus 7 h
    state, _ = run(FRESH, inp(), at(10, 10, 0, 1), long_interval)
    assert state.phase is DRAIN and state.trigger is Trigger.SOLUTION_AGE


def test_ec_drift_must_persist_for_the_confirm_time() -> None:
    s, _ = run(FRESH, inp(ec=1.3), at(1, 12))  # |1.3-2.0|/2.0 = 35 % > 30 %
    assert s.ec_drift_since == at(1, 12) and s.phase is NORMAL
    s, _ = run(s, inp(ec=1.3), at(1, 12, 29))
    assert s.phase is NORMAL
    s, _ = run(s, inp(ec=None), at(1, 12, 29, 30))  # unavailable: timer kept, not reset
    assert s.ec_drift_since == at(1, 12)
    s, _ = run(s, inp(ec=1.3), at(1, 12, 30))
    assert s.phase is DRAIN and s.trigger is Trigger.EC_DRIFT


def test_ec_back_in_range_resets_the_drift_timer() -> None:
    s, _ = run(FRESH, inp(ec=1.3), at(1, 12))
    s, _ = run(s, inp(ec=1.9), at(1, 12, 20))
    assert s.ec_drift_since is None
    s, _ = run(s, inp(ec=1.3), at(1, 12, 40))
    assert s.phase is NORMAL and s.ec_drift_since == at(1, 12, 40)


def test_ec_drift_trigger_can_be_switched_off() -> None:
    no_drift = water_cycle_from_dict({"water_change": {"enabled": True, "trigger_by_ec_drift": False}})
    s, _ = run(FRESH, inp(ec=1.0), at(1, 12), no_drift)
    s, _ = run(s, inp(ec=1.0), at(1, 18), no_drift)
    assert s.phase is NORMAL


def test_disabled_or_manual_never_starts_automatically_but_operator_can() -> None:
    for raw in ({"water_change": {"enabled": False}}, {"mode": "MANUAL", "water_change": {"enabled": True}}):
        c = water_cycle_from_dict(raw)
        assert run(FRESH, inp(), at(30, 12), c)[0].phase is NORMAL
        s, _ = run(FRESH, inp(operator_start=True), at(30, 12), c)
        assert s.phase is DRAIN and s.trigger is Trigger.OPERATOR
        assert s.last_auto_start_date is None


def test_automatic_start_waits_while_level_unavailable_or_drain_refused() -> None:
    assert run(FRESH, inp(level=None), at(7, 9)) == (FRESH, [])
    stale = WaterInputs(water_level=50.0, level_age_s=61.0, ec=1.9, ec_age_s=1.0)
    assert run(FRESH, stale, at(7, 9)) == (FRESH, [])
    refused = inp(can_run_drain=False, interlock_reason="alert:biz_no_flow")
    assert run(FRESH, refused, at(7, 9, 5)) == (FRESH, [])
    assert run(FRESH, inp(), at(7, 9, 10))[0].phase is DRAIN


def test_automatic_start_happens_at_most_once_per_local_day() -> None:
    s, _ = run(FRESH, inp(), at(7, 9))
    s, _ = run(s, inp(operator_abort=True), at(7, 9, 5))
    assert s.phase is NORMAL and s.last_auto_start_date == "2026-01-12"
    assert run(s, inp(), at(7, 23, 59))[0].phase is NORMAL
    assert run(s, inp(), at(8, 9))[0].phase is DRAIN


def test_operator_start_refused_by_interlock_fails_with_the_reason() -> None:
    s, actions = run(
        FRESH, inp(operator_start=True, can_run_drain=False, interlock_reason="locked:biz_overcurrent"), 1e9
    )
    assert s.phase is FAILED and s.last_error == "interlock:locked:biz_overcurrent"
    assert kinds(actions) == [
        WaterEvent.STARTED,
        *SAFE,
        RaiseAlert(
            BIZ_WATER_CHANGE_FAILED,
            Severity.CRITICAL,
            {"phase": "NORMAL_RECIRC", "reason": "interlock:locked:biz_overcurrent"},
        ),
        WaterEvent.FAILED,
        PersistState(),
    ]


def test_operator_start_without_a_level_reading_fails_without_touching_recirc() -> None:
    s, actions = run(FRESH, inp(level=None, operator_start=True), at(1, 12))
    assert s.phase is FAILED and s.last_error == "level_unavailable"
    assert RECIRC_OFF not in actions


def test_empty_tank_needs_no_drain_even_if_the_drain_is_refused() -> None:
    refused = inp(level=1.0, operator_start=True, can_run_drain=False, interlock_reason="dry_run")
    s, _ = run(FRESH, refused, at(1, 12))
    assert s.phase is FILL and s.pump_on


def test_start_with_an_already_empty_tank_goes_straight_to_fill() -> None:
    s, actions = run(FRESH, inp(level=3.0, operator_start=True), at(1, 12))
    assert s.phase is FILL and s.pump_on
    assert kinds(actions) == [
        WaterEvent.STARTED,
        WaterEvent.PHASE,
        RECIRC_OFF,
        SetPump(PumpRole.DRAIN, False),
        WaterEvent.PHASE,
        SetPump(PumpRole.FILL, True),
        PersistState(),
    ]


def test_normal_ignores_abort_and_ack() -> None:
    assert run(FRESH, inp(operator_abort=True, operator_ack_failed=True), at(1, 12)) == (FRESH, [])


# DRAIN ------------------------------------------------------------------------------------

T0 = at(7, 9)


def draining(**kw: Any) -> WaterState:
    return in_phase(DRAIN, T0, pump_on=True, **kw)


def test_drain_runs_until_empty_then_fills() -> None:
    s = draining()
    assert run(s, inp(level=30.0), T0 + 600) == (s, [])
    s, actions = run(s, inp(level=5.0), T0 + 900)
    assert s.phase is FILL and s.phase_started_at_wall == T0 + 900 and s.pump_on
    assert kinds(actions) == [
        SetPump(PumpRole.DRAIN, False),
        WaterEvent.PHASE,
        SetPump(PumpRole.FILL, True),
        PersistState(),
    ]


def test_drain_timeout_fails_with_all_pumps_safe() -> None:
    s = draining()
    assert run(s, inp(level=40.0), T0 + 30 * 60 - 1)[0].phase is DRAIN
    s, actions = run(s, inp(level=40.0), T0 + 30 * 60)
    assert s.phase is FAILED and s.last_error == "drain_timeout"
    details = {"phase": "WATER_CHANGE_DRAIN", "reason": "drain_timeout"}
    assert actions == [
        *SAFE,
        RaiseAlert(BIZ_WATER_CHANGE_FAILED, Severity.CRITICAL, details),
        RecordEvent(WaterEvent.FAILED, details),
        PersistState(),
    ]


def test_drain_pauses_while_level_unavailable_and_resumes_when_it_returns() -> None:
    s = draining()
    s, actions = run(s, inp(level=None), T0 + 60)
    assert actions == [SetPump(PumpRole.DRAIN, False), PersistState()] and not s.pump_on
    assert run(s, inp(level=None), T0 + 120) == (s, [])  # no chatter while waiting
    s, actions = run(s, inp(level=40.0), T0 + 180)
    assert actions == [SetPump(PumpRole.DRAIN, True), PersistState()] and s.pump_on


def test_drain_paused_until_the_step_timeout_fails() -> None:
    s, _ = run(draining(), inp(level=None), T0 + 60)
    s, actions = run(s, inp(level=None), T0 + 30 * 60)
    assert s.phase is FAILED and s.last_error == "drain_timeout"
    assert actions[:3] == SAFE


def test_drain_interlock_refusal_fails() -> None:
    s, actions = run(draining(), inp(level=40.0, can_run_drain=False, interlock_reason="alert:biz_no_flow"), T0 + 60)
    assert s.phase is FAILED and s.last_error == "interlock:alert:biz_no_flow"
    assert actions[:3] == SAFE


def test_interlock_refusal_for_missing_level_only_pauses() -> None:
    refused = inp(level=None, can_run_drain=False, interlock_reason="level_unavailable")
    s, _ = run(draining(), refused, T0 + 60)
    assert s.phase is DRAIN and not s.pump_on


def test_drain_abort_returns_to_recirculation() -> None:
    s, actions = run(draining(), inp(level=40.0, operator_abort=True), T0 + 60)
    assert s.phase is NORMAL and s.trigger is None
    assert kinds(actions) == [*SAFE, WaterEvent.ABORTED, PersistState()]
    assert s.solution_started_at == FRESH.solution_started_at  # old solution still (partly) there


# FILL -------------------------------------------------------------------------------------


def filling(**kw: Any) -> WaterState:
    return in_phase(FILL, T0, pump_on=True, **kw)


def test_fill_runs_until_target_then_stabilizes() -> None:
    s = filling()
    assert run(s, inp(level=50.0), T0 + 300) == (s, [])
    s, actions = run(s, inp(level=90.0), T0 + 600)
    assert s.phase is STAB and not s.pump_on
    assert kinds(actions) == [SetPump(PumpRole.FILL, False), WaterEvent.PHASE, RECIRC_ON, PersistState()]


def test_fill_timeout_fails() -> None:
    assert run(filling(), inp(level=50.0), T0 + 20 * 60 - 1)[0].phase is FILL
    s, actions = run(filling(), inp(level=50.0), T0 + 20 * 60)
    assert s.phase is FAILED and s.last_error == "fill_timeout"
    assert actions[:3] == SAFE


def test_fill_refused_when_entering_fails_in_fill() -> None:
    s, actions = run(draining(), inp(level=4.0, can_run_fill=False, interlock_reason="too_many_failures"), T0 + 60)
    assert s.phase is FAILED and s.last_error == "interlock:too_many_failures"
    alert = next(a for a in actions if isinstance(a, RaiseAlert))
    assert alert.details == {"phase": "WATER_CHANGE_FILL", "reason": "interlock:too_many_failures"}


def test_fill_interlock_refusal_mid_fill_fails() -> None:
    s, actions = run(filling(), inp(level=50.0, can_run_fill=False, interlock_reason="alert:biz_dry_run"), T0 + 60)
    assert s.phase is FAILED and s.last_error == "interlock:alert:biz_dry_run"
    assert actions[:3] == SAFE


def test_fill_pauses_while_level_unavailable() -> None:
    s, actions = run(filling(), inp(level=None), T0 + 60)
    assert actions == [SetPump(PumpRole.FILL, False), PersistState()]
    s, actions = run(s, inp(level=70.0), T0 + 90)
    assert actions == [SetPump(PumpRole.FILL, True), PersistState()]


def test_fill_abort_returns_to_recirculation() -> None:
    s, actions = run(filling(), inp(level=50.0, operator_abort=True), T0 + 60)
    assert s.phase is NORMAL and kinds(actions) == [*SAFE, WaterEvent.ABORTED, PersistState()]


# STABILIZE / FAILED -------------------------------------------------------------------------


def test_stabilize_waits_then_records_the_new_solution() -> None:
    s = in_phase(STAB, T0)
    assert run(s, inp(ec=0.9), T0 + 15 * 60 - 1) == (s, [])
    s, actions = run(s, inp(level=91.0, ec=0.9), T0 + 15 * 60)
    assert s.phase is NORMAL
    assert (s.solution_started_at, s.ec_at_start, s.trigger) == (T0 + 900, 0.9, None)
    assert actions == [
        RecordEvent(
            WaterEvent.COMPLETED,
            {"trigger": "operator", "duration_s": 900.0, "water_level": 91.0, "ec": 0.9},
        ),
        PersistState(),
    ]


def test_stabilize_abort_keeps_the_new_solution() -> None:
    s, actions = run(in_phase(STAB, T0), inp(ec=1.1, operator_abort=True), T0 + 60)
    assert s.phase is NORMAL and s.solution_started_at == T0 + 60 and s.ec_at_start == 1.1
    assert kinds(actions) == [*SAFE, WaterEvent.ABORTED, PersistState()]


def test_failed_needs_the_operator() -> None:
    s = in_phase(FAILED, T0, last_error="drain_timeout")
    for inputs in (inp(), inp(operator_start=True), inp(operator_abort=True)):
        assert run(s, inputs, at(20, 9)) == (s, [])
    s2, actions = run(s, inp(operator_ack_failed=True), T0 + 3600)
    assert s2.phase is NORMAL and s2.last_error == "drain_timeout"
    assert actions == [
        ResolveAlert(BIZ_WATER_CHANGE_FAILED),
        RecordEvent(WaterEvent.ACKNOWLEDGED, {"last_error": "drain_timeout"}),
        PersistState(),
    ]


def test_whole_change_walks_every_phase_in_order() -> None:
    s, log = FRESH, []
    script = [
        (at(7, 9), inp(level=80.0)),
        (at(7, 9, 10), inp(level=30.0)),
        (at(7, 9, 20), inp(level=4.0)),
        (at(7, 9, 30), inp(level=60.0)),
        (at(7, 9, 38), inp(level=92.0)),
        (at(7, 9, 50), inp(level=92.0)),
        (at(7, 9, 53), inp(level=92.0, ec=1.6)),
    ]
    for wall, inputs in script:
        s, actions = run(s, inputs, wall)
        log.append((s.phase, [a.type for a in actions if isinstance(a, RecordEvent)]))
    assert log == [
        (DRAIN, [WaterEvent.STARTED, WaterEvent.PHASE]),
        (DRAIN, []),
        (FILL, [WaterEvent.PHASE]),
        (FILL, []),
        (STAB, [WaterEvent.PHASE]),
        (STAB, []),
        (NORMAL, [WaterEvent.COMPLETED]),
    ]
    assert s.solution_started_at == at(7, 9, 53) and s.ec_at_start == 1.6
    # The next scheduled change is a week later.
    assert run(s, inp(), at(13, 9))[0].phase is NORMAL
    assert run(s, inp(), at(14, 9))[0].phase is DRAIN


def test_wall_clock_stepping_back_restarts_the_step_timer_instead_of_freezing_it() -> None:
    s, _ = run(draining(), inp(level=40.0), T0 - 3600)
    assert s.phase is DRAIN and s.phase_started_at_wall == T0 - 3600
    assert run(s, inp(level=40.0), T0 - 3600 + 30 * 60)[0].phase is FAILED


# restart ------------------------------------------------------------------------------------


def test_resume_normal_only_makes_sure_drain_and_fill_are_off() -> None:
    assert resume(FRESH, at(3)) == (FRESH, [SetPump(PumpRole.DRAIN, False), SetPump(PumpRole.FILL, False)])


@pytest.mark.parametrize("phase", [DRAIN, FILL])
def test_resume_never_continues_a_drain_or_fill(phase: WaterPhase) -> None:
    s, actions = resume(in_phase(phase, T0, pump_on=True), T0 + 120)
    assert s.phase is FAILED and s.last_error == "interrupted_by_restart" and not s.pump_on
    details = {"phase": phase.value, "reason": "interrupted_by_restart"}
    assert actions == [
        *SAFE,
        RaiseAlert(BIZ_WATER_CHANGE_FAILED, Severity.CRITICAL, details),
        RecordEvent(WaterEvent.FAILED, details),
        PersistState(),
    ]


def test_resume_stabilize_continues_the_wait_to_the_original_deadline() -> None:
    s, actions = resume(in_phase(STAB, T0), T0 + 300)
    assert s.phase is STAB and actions == SAFE
    assert run(s, inp(), T0 + 899)[0].phase is STAB
    assert run(s, inp(), T0 + 900)[0].phase is NORMAL


def test_resume_failed_stays_failed_with_recirc_on() -> None:
    s = in_phase(FAILED, T0, last_error="fill_timeout")
    assert resume(s, T0 + 60) == (s, SAFE)


def test_state_survives_json_persistence_in_every_phase() -> None:
    for phase in WaterPhase:
        s = in_phase(phase, T0, last_error="x", last_auto_start_date="2026-01-12", ec_drift_since=5.0, pump_on=True)
        assert WaterState.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert WaterState.from_dict({}) == WaterState()
    with pytest.raises(ValueError):
        WaterState.from_dict({"phase": "BOILING"})


def test_only_normal_recirc_leaves_the_recirc_pump_to_decide_recirc() -> None:
    assert [p for p in WaterPhase if not p.owns_recirc] == [NORMAL]


# Exact results of each transition (each of these was a surviving mutant) ---------------------------


def test_default_state_serialises_every_field() -> None:
    assert WaterState().to_dict() == {
        "phase": "NORMAL_RECIRC",
        "phase_started_at_wall": 0.0,
        "solution_started_at": None,
        "ec_at_start": None,
        "last_error": None,
        "trigger": None,
        "change_started_at_wall": None,
        "last_auto_start_date": None,
        "ec_drift_since": None,
        "pump_on": False,
    }


def test_operator_start_records_the_situation_and_resets_the_change_bookkeeping() -> None:
    before = replace(FRESH, last_error="drain_timeout")
    s, actions = run(before, inp(level=70.0, ec=1.0, operator_start=True), at(1, 12))  # EC drifting 50 %
    assert s == replace(
        before,
        phase=DRAIN,
        phase_started_at_wall=at(1, 12),
        trigger=Trigger.OPERATOR,
        change_started_at_wall=at(1, 12),
        last_error=None,
        ec_drift_since=None,
        pump_on=True,
    )
    assert actions[0] == RecordEvent(
        WaterEvent.STARTED,
        {
            "trigger": "operator",
            "water_level": 70.0,
            "ec": 1.0,
            "solution_started_at": at(0, 10),
            "local_time": datetime.fromtimestamp(at(1, 12), MSK).isoformat(),
        },
    )


def test_a_tank_exactly_at_empty_level_needs_no_drain_even_if_refused() -> None:
    refused = inp(level=5.0, operator_start=True, can_run_drain=False)
    s, _ = run(FRESH, refused, at(1, 12))
    assert s.phase is FILL and s.pump_on


def test_refusals_without_a_reason_name_the_refused_pump() -> None:
    t = at(1, 12)
    s, _ = run(FRESH, inp(operator_start=True, can_run_drain=False), t)
    assert (s.phase, s.last_error, s.phase_started_at_wall) == (FAILED, "interlock:drain_refused", t)
    s, _ = run(filling(), inp(level=50.0, can_run_fill=False), T0 + 60)
    assert (s.phase, s.last_error, s.phase_started_at_wall) == (FAILED, "interlock:fill_refused", T0 + 60)


def test_failing_sets_exactly_the_failure_fields() -> None:
    s, _ = run(draining(), inp(level=40.0), T0 + 30 * 60)
    assert s == replace(
        draining(), phase=FAILED, phase_started_at_wall=T0 + 30 * 60, last_error="drain_timeout", pump_on=False
    )


def test_drain_paused_for_a_missing_level_records_the_pump_as_off() -> None:
    s, _ = run(draining(), inp(level=None), T0 + 60)
    assert s == replace(draining(), pump_on=False)


def test_fill_done_enters_stabilize_with_every_pump_recorded_off() -> None:
    s, _ = run(filling(), inp(level=90.0), T0 + 600)
    # The change as a whole keeps its start; the new phase has its own.
    assert s == replace(filling(), phase=STAB, phase_started_at_wall=T0 + 600, pump_on=False)


def test_abort_returns_to_recirculation_with_the_phase_it_left() -> None:
    s, actions = run(draining(ec_drift_since=5.0), inp(operator_abort=True), T0 + 60)
    assert s == replace(
        draining(ec_drift_since=5.0),
        phase=NORMAL,
        phase_started_at_wall=T0 + 60,
        trigger=None,
        change_started_at_wall=None,
        pump_on=False,
    )
    assert actions == [*SAFE, RecordEvent(WaterEvent.ABORTED, {"phase": "WATER_CHANGE_DRAIN"}), PersistState()]


def test_stabilize_abort_sets_its_own_time() -> None:
    s, _ = run(in_phase(STAB, T0), inp(ec=1.1, operator_abort=True), T0 + 60)
    assert s.phase_started_at_wall == T0 + 60 and s.change_started_at_wall is None


def test_completing_clears_the_change_and_the_pump_flag() -> None:
    s = in_phase(STAB, T0, ec_drift_since=5.0, pump_on=True)  # e.g. a state persisted by an older version
    done, _ = run(s, inp(ec=0.9), T0 + 900)
    assert done == replace(
        s,
        phase=NORMAL,
        phase_started_at_wall=T0 + 900,
        solution_started_at=T0 + 900,
        ec_at_start=0.9,
        trigger=None,
        change_started_at_wall=None,
        ec_drift_since=None,
        pump_on=False,
    )


def test_completing_a_change_restored_without_trigger_or_start() -> None:
    s = replace(in_phase(STAB, T0), trigger=None, change_started_at_wall=None)
    _, actions = run(s, inp(level=91.0, ec=0.9), T0 + 900)
    assert actions[0] == RecordEvent(
        WaterEvent.COMPLETED, {"trigger": None, "duration_s": None, "water_level": 91.0, "ec": 0.9}
    )


def test_acknowledging_a_failure_clears_the_change() -> None:
    s = in_phase(FAILED, T0, last_error="drain_timeout", pump_on=True)
    acked, _ = run(s, inp(operator_ack_failed=True), T0 + 3600)
    assert acked == replace(s, phase=NORMAL, trigger=None, change_started_at_wall=None, pump_on=False)


def test_resume_fails_an_interrupted_drain_at_the_restart_time() -> None:
    s, _ = resume(draining(), T0 + 120)
    assert s.phase_started_at_wall == T0 + 120


@pytest.mark.parametrize("phase", [STAB, FAILED])
def test_resume_records_the_working_pump_as_off(phase: WaterPhase) -> None:
    s, _ = resume(in_phase(phase, T0, pump_on=True), T0 + 60)
    assert s.pump_on is False


def test_solution_exactly_max_age_old_is_not_yet_too_old() -> None:
    long_interval = water_cycle_from_dict({"water_change": {"enabled": True, "interval_days": 30}})
    s = replace(FRESH, solution_started_at=at(0, 3))
    assert run(s, inp(), at(10, 3), long_interval)[0].phase is NORMAL  # exactly 10 days
    state, _ = run(s, inp(), at(10, 3, 0, 1), long_interval)
    assert state.trigger is Trigger.SOLUTION_AGE


def test_schedule_counts_days_in_greenhouse_local_time() -> None:
    # 01:00 Moscow is still the previous day in UTC: the calendar day is Moscow's.
    s = replace(FRESH, solution_started_at=at(0, 1))
    assert run(s, inp(), at(6, 9))[0].phase is NORMAL
    assert run(s, inp(), at(7, 9))[0].trigger is Trigger.SCHEDULE


def test_ec_drift_is_measured_relative_to_the_start_ec() -> None:
    cfg = water_cycle_from_dict({"water_change": {"enabled": True, "ec_drift_threshold": 25}})
    base = replace(FRESH, ec_at_start=4.0)
    assert run(base, inp(ec=5.0), at(1, 12), cfg)[0].ec_drift_since is None  # exactly 25 %: not more
    assert run(base, inp(ec=5.1), at(1, 12), cfg)[0].ec_drift_since == at(1, 12)
    assert run(replace(FRESH, ec_at_start=2.0), inp(ec=2.5), at(1, 12), cfg)[0].ec_drift_since is None  # 25 %
    low = replace(FRESH, ec_at_start=0.8)
    assert run(low, inp(ec=1.2), at(1, 12), cfg)[0].ec_drift_since == at(1, 12)  # 50 % of a small EC
    zero = replace(FRESH, ec_at_start=0.0)  # no reference to drift from (e.g. the tank held plain water)
    assert run(zero, inp(ec=1.2), at(1, 12), cfg)[0].ec_drift_since is None
