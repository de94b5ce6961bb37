"""NC recirculation invariants (issue: NC never starved): interlock exemptions and the max-OFF backstop."""

from __future__ import annotations

from dataclasses import replace

from gateway.safety.interlock import InterlockSnapshot, can_run_pump
from gateway.safety.rules import (
    BIZ_DRY_RUN,
    BIZ_NO_CIRCULATION,
    BIZ_OVERCURRENT,
    BIZ_PUMP_STUCK_ON,
    ChannelInputs,
    ChannelLimits,
    ChannelSafetyState,
    FailSafe,
    RaiseAlert,
    ResolveAlert,
    RestorePump,
    Sensor,
    evaluate,
)

NC = InterlockSnapshot(channel="recirc", fail_safe=FailSafe.NC, min_water_level=10.0)
NO = replace(NC, fail_safe=FailSafe.NO, water_level=50.0, level_age_s=1.0)


def test_nc_return_is_not_refused_by_a_stale_level_or_another_pumps_alert() -> None:
    snap = replace(
        NC,
        water_level=50.0,
        level_age_s=3600.0,  # stale
        active_alert_codes=frozenset({BIZ_OVERCURRENT}),  # another pump's alert in the zone
        recent_failures=99,
        unavailable_sensors=(Sensor.CURRENT,),
        watchdog_tripped=True,
    )
    assert can_run_pump(snap).allowed


def test_nc_return_is_refused_by_its_own_lock_or_its_own_critical_alert() -> None:
    assert can_run_pump(replace(NC, locked_code=BIZ_OVERCURRENT)).reason == "locked:biz_overcurrent"
    own = replace(NC, own_alert_codes=frozenset({BIZ_DRY_RUN}), active_alert_codes=frozenset({BIZ_DRY_RUN}))
    assert can_run_pump(own).reason == "alert:biz_dry_run"


def test_no_pump_start_is_refused_while_the_watchdog_is_tripped() -> None:
    assert can_run_pump(NO).allowed
    assert can_run_pump(replace(NO, watchdog_tripped=True)).reason == "watchdog_tripped"


def test_failure_counter_refuses_a_no_pump_at_the_limit_and_not_below() -> None:
    assert can_run_pump(replace(NO, recent_failures=2, max_failures=3)).allowed
    assert can_run_pump(replace(NO, recent_failures=3, max_failures=3)).reason == "too_many_failures"


LIMITS = ChannelLimits(channel="recirc", fail_safe=FailSafe.NC, max_off_s=600.0, current_sensor=False,
                       flow_sensor=False, level_sensor=False)


def _off(state: ChannelSafetyState, t: float, lease: float | None = None) -> tuple[ChannelSafetyState, list[object]]:
    new, actions = evaluate(state, ChannelInputs(desired_on=False, relay_on=False, off_allowed_until=lease),
                            LIMITS, t)
    return new, list(actions)


def test_nc_pump_off_longer_than_max_off_is_restored_whoever_asked_for_off() -> None:
    state, actions = _off(ChannelSafetyState(), 0.0)
    assert actions == []
    state, actions = _off(state, 599.9)
    assert actions == []
    state, actions = _off(state, 600.0)
    assert actions == [RestorePump("nc_max_off")]


def test_an_explicit_lease_lets_an_nc_pump_stay_off_until_it_ends() -> None:
    state, _ = _off(ChannelSafetyState(), 0.0, lease=3000.0)
    state, actions = _off(state, 2999.0, lease=3000.0)
    assert actions == []
    _, actions = _off(state, 3000.0, lease=3000.0)
    assert actions == [RestorePump("nc_max_off")]


def test_a_locked_nc_pump_stays_off_with_one_no_circulation_alert_resolved_when_it_runs_again() -> None:
    state = ChannelSafetyState(latched=(BIZ_OVERCURRENT,))
    state, _ = _off(state, 0.0)
    state, actions = _off(state, 600.0)
    assert len(actions) == 1 and isinstance(actions[0], RaiseAlert)
    assert actions[0].code == BIZ_NO_CIRCULATION and actions[0].scope == "recirc"
    state, actions = _off(state, 900.0)
    assert actions == []  # once per OFF stretch
    running = ChannelInputs(desired_on=True, relay_on=True)
    _, actions = evaluate(replace(state, latched=()), running, LIMITS, 901.0)
    assert ResolveAlert(BIZ_NO_CIRCULATION, scope="recirc") in actions


def test_a_welded_nc_relay_raises_no_no_circulation_alert() -> None:
    state, _ = _off(ChannelSafetyState(latched=(BIZ_PUMP_STUCK_ON,)), 0.0)
    _, actions = _off(state, 700.0)
    assert actions == []


def test_no_pumps_have_no_max_off() -> None:
    limits = replace(LIMITS, fail_safe=FailSafe.NO)
    state, _ = evaluate(ChannelSafetyState(), ChannelInputs(desired_on=False, relay_on=False), limits, 0.0)
    _, actions = evaluate(state, ChannelInputs(desired_on=False, relay_on=False), limits, 10_000.0)
    assert actions == []
