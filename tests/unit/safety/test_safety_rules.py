"""Per-channel safety rules, tick by tick under explicit monotonic times."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.safety.rules import (
    BIZ_DRY_RUN,
    BIZ_NO_FLOW,
    BIZ_OVERCURRENT,
    BIZ_PUMP_STUCK_ON,
    BIZ_SENSOR_UNAVAILABLE,
    ChannelInputs,
    ChannelLimits,
    ChannelSafetyState,
    FailSafe,
    LockChannel,
    RaiseAlert,
    ResolveAlert,
    SafetyAction,
    Sensor,
    Severity,
    StopPump,
    blind_sensors,
    evaluate,
    operator_reset,
)

DRAIN = ChannelLimits(channel="pump_drain", min_water_level=2.0, no_flow_grace_s=30.0)
RECIRC_NC = ChannelLimits(channel="pump_recirc", fail_safe=FailSafe.NC, min_water_level=10.0)


def healthy(relay_on: bool = True, **over: Any) -> ChannelInputs:
    """A running (or idle) pump with every sensor fresh and happy."""
    base: dict[str, Any] = {
        "desired_on": relay_on,
        "relay_on": relay_on,
        "current_a": 0.8 if relay_on else 0.02,
        "current_age_s": 0.5,
        "flow_l_min": 10.0 if relay_on else 0.0,
        "flow_age_s": 0.5,
        "water_level": 60.0,
        "level_age_s": 0.5,
    }
    base.update(over)
    return ChannelInputs(**base)


class Channel:
    """Runs evaluate over time and remembers what it returned."""

    def __init__(self, limits: ChannelLimits, state: ChannelSafetyState | None = None) -> None:
        self.limits = limits
        self.state = state or ChannelSafetyState()
        self.log: list[tuple[float, SafetyAction]] = []

    def tick(self, now: float, inputs: ChannelInputs) -> list[SafetyAction]:
        self.state, actions = evaluate(self.state, inputs, self.limits, now)
        self.log += [(now, a) for a in actions]
        return actions

    def walk(self, start: float, end: float, inputs: ChannelInputs, dt: float = 1.0) -> None:
        t = start
        while t <= end:
            self.tick(t, inputs)
            t += dt


def test_healthy_running_pump_produces_no_actions_for_an_hour() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 3600, healthy())
    assert ch.log == []


def test_overcurrent_stops_alerts_and_locks_in_the_same_tick() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 10, healthy())
    actions = ch.tick(11, healthy(current_a=2.3))
    assert actions == [
        StopPump(BIZ_OVERCURRENT),
        RaiseAlert(
            BIZ_OVERCURRENT,
            Severity.CRITICAL,
            {"channel": "pump_drain", "current_a": 2.3, "threshold_a": 1.5},
            scope="pump_drain",
        ),
        LockChannel(BIZ_OVERCURRENT),
    ]


def test_latched_channel_keeps_getting_stop_without_repeating_the_alert() -> None:
    ch = Channel(DRAIN)
    ch.tick(0, healthy(current_a=2.3))
    # The shell failed to switch off (or something switched it back on): insist, don't re-alert.
    assert ch.tick(1, healthy(current_a=2.3)) == [StopPump(BIZ_OVERCURRENT)]
    assert ch.tick(2, healthy()) == [StopPump(BIZ_OVERCURRENT)]


def test_stale_current_reading_is_not_used_for_overcurrent() -> None:
    ch = Channel(DRAIN)
    actions = ch.tick(0, healthy(current_a=2.3, current_age_s=31.0))
    assert not any(isinstance(a, StopPump) for a in actions)


def test_dry_run_during_a_run_stops_and_alerts_without_lock() -> None:
    ch = Channel(RECIRC_NC)
    ch.walk(0, 5, healthy())
    actions = ch.tick(6, healthy(water_level=8.0))
    assert actions == [
        StopPump(BIZ_DRY_RUN),
        RaiseAlert(
            BIZ_DRY_RUN,
            Severity.CRITICAL,
            {"channel": "pump_recirc", "water_level": 8.0, "min_level": 10.0},
            scope="pump_recirc",
        ),
    ]


def test_fill_pump_without_min_level_has_no_dry_run_check() -> None:
    fill = ChannelLimits(channel="pump_fill", min_water_level=None)
    ch = Channel(fill)
    ch.walk(0, 60, healthy(water_level=0.5))
    assert ch.log == []


def test_no_flow_after_switch_on_trips_only_after_the_grace_period() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 30, healthy(flow_l_min=0.0))
    assert ch.log == []  # 30 s is not *longer* than the grace
    actions = ch.tick(31, healthy(flow_l_min=0.0))
    assert [type(a) for a in actions] == [StopPump, RaiseAlert, LockChannel]
    assert actions[0] == StopPump(BIZ_NO_FLOW)
    alert = actions[1]
    assert isinstance(alert, RaiseAlert) and alert.details["variant"] == "flow"
    assert actions[2] == LockChannel(BIZ_NO_FLOW)


def test_flow_dropping_mid_run_gets_its_own_grace() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 600, healthy())
    ch.walk(601, 630, healthy(flow_l_min=0.2))
    assert ch.log == []
    assert ch.tick(631, healthy(flow_l_min=0.2))[0] == StopPump(BIZ_NO_FLOW)


def test_flow_recovering_within_grace_does_not_trip() -> None:
    ch = Channel(DRAIN)
    for t in range(0, 300):
        ch.tick(t, healthy(flow_l_min=0.0 if t % 40 < 20 else 10.0))
    assert ch.log == []


def test_no_flow_by_level_when_there_is_no_flow_sensor() -> None:
    limits = ChannelLimits(channel="pump_drain", flow_sensor=False, level_change_min=1.0, min_water_level=2.0)
    ch = Channel(limits)
    # Level falls 1/8 %/s: moves by 1 % every 8 s, well inside the 30 s window.
    for t in range(0, 200):
        ch.tick(t, healthy(flow_l_min=None, water_level=60.0 - t / 8))
    assert ch.log == []
    # Then the drain clogs: the level stays put.
    for t in range(200, 260):
        ch.tick(t, healthy(flow_l_min=None, water_level=35.5))
    stops = [(t, a) for t, a in ch.log if isinstance(a, StopPump)]
    assert stops[0][1] == StopPump(BIZ_NO_FLOW)
    # The last reference was taken at t=192 (level 36.0); no 1 % move since ⇒ trip once > 30 s later.
    assert stops[0][0] == 223
    alert = next(a for _, a in ch.log if isinstance(a, RaiseAlert))
    assert alert.details["variant"] == "level"


def test_level_variant_is_the_fallback_when_the_flow_sensor_goes_stale() -> None:
    limits = ChannelLimits(channel="pump_drain", level_change_min=1.0, min_water_level=2.0)
    ch = Channel(limits)
    ch.walk(0, 100, healthy(water_level=50.0, flow_age_s=120.0))
    stops = [t for t, a in ch.log if isinstance(a, StopPump)]
    assert stops[0] == 31
    assert any(isinstance(a, RaiseAlert) and a.code == BIZ_NO_FLOW for _, a in ch.log)


def test_recirc_without_flow_sensor_and_level_check_never_trips_no_flow() -> None:
    limits = ChannelLimits(channel="pump_recirc", fail_safe=FailSafe.NC, flow_sensor=False)
    ch = Channel(limits)
    ch.walk(0, 3600, healthy(flow_l_min=None), dt=10)
    assert ch.log == []


def _stuck_alert_ticks(ch: Channel) -> list[float]:
    return [t for t, a in ch.log if isinstance(a, RaiseAlert) and a.code == BIZ_PUMP_STUCK_ON]


def test_pump_stuck_on_alerts_once_and_locks_without_stop() -> None:
    ch = Channel(RECIRC_NC)
    ch.walk(0, 60, healthy())
    # Commanded off at 61, but current and flow keep going (welded relay).
    ch.walk(61, 600, healthy(relay_on=False, current_a=0.8, flow_l_min=11.0))
    # settle_s = 5: the first reading taken at or after 66 arrives at 67 (readings are 0.5 s old).
    assert _stuck_alert_ticks(ch) == [67]
    kinds = [type(a) for _, a in ch.log]
    assert kinds == [RaiseAlert, LockChannel]
    assert not any(isinstance(a, StopPump) for _, a in ch.log)
    alert = ch.log[0][1]
    assert isinstance(alert, RaiseAlert)
    assert alert.severity is Severity.CRITICAL
    assert alert.details["fail_safe"] == "NC" and alert.details["current_a"] == 0.8


def test_stuck_on_ignores_readings_taken_before_the_pump_could_stop() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 60, healthy())
    # At 70 the newest current reading is 12 s old: taken at 58 while the pump was running.
    ch.walk(61, 70, healthy(relay_on=False, current_a=0.8, current_age_s=12.0, flow_l_min=None))
    assert _stuck_alert_ticks(ch) == []


def test_stuck_on_detected_by_flow_alone() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 100, healthy(relay_on=False, current_a=0.02, flow_l_min=5.0))
    assert _stuck_alert_ticks(ch) == [6]


def test_idle_pump_is_not_stuck() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 600, healthy(relay_on=False))
    assert ch.log == []


def test_operator_reset_clears_latches_and_allows_a_new_alert() -> None:
    ch = Channel(DRAIN)
    ch.tick(0, healthy(current_a=2.3))
    ch.state = operator_reset(ch.state)
    assert ch.state.latched == ()
    assert ch.tick(10, healthy()) == []
    assert ch.tick(11, healthy(current_a=2.4))[0] == StopPump(BIZ_OVERCURRENT)


def test_unavailable_current_alerts_after_grace_and_stops_a_no_pump() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 20, healthy())
    ch.walk(21, 40, healthy(current_a=None, current_age_s=None))
    assert ch.log[0] == (
        31,
        RaiseAlert(
            BIZ_SENSOR_UNAVAILABLE,
            Severity.WARNING,
            {"channel": "pump_drain", "sensors": ["current"], "stale_after_s": 30.0},
            scope="pump_drain",
        ),
    )
    assert ch.log[1] == (31, StopPump(BIZ_SENSOR_UNAVAILABLE))
    assert not any(isinstance(a, LockChannel) for _, a in ch.log)


def test_unavailable_current_leaves_nc_recirc_running() -> None:
    ch = Channel(RECIRC_NC)
    ch.walk(0, 3600, healthy(current_a=None, current_age_s=None), dt=5)
    assert [a for _, a in ch.log if isinstance(a, StopPump)] == []
    assert [a for _, a in ch.log if not isinstance(a, RaiseAlert)] == []
    assert [a.code for _, a in ch.log if isinstance(a, RaiseAlert)] == [BIZ_SENSOR_UNAVAILABLE]  # once, not every tick


def test_sensor_alert_is_updated_when_the_set_changes_and_resolved_when_all_are_back() -> None:
    ch = Channel(RECIRC_NC)
    ch.walk(0, 15, healthy(flow_l_min=None))
    ch.walk(16, 30, healthy(flow_l_min=None, current_a=None))
    ch.walk(31, 40, healthy())
    codes = [(t, type(a).__name__, getattr(a, "details", {}).get("sensors")) for t, a in ch.log]
    assert codes == [
        (10, "RaiseAlert", ["flow"]),
        (16, "RaiseAlert", ["current", "flow"]),
        (31, "ResolveAlert", None),
    ]
    assert ch.log[-1][1] == ResolveAlert(BIZ_SENSOR_UNAVAILABLE, scope="pump_recirc")


def test_short_sensor_dropout_within_grace_raises_nothing() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 5, healthy(level_age_s=45.0))
    ch.walk(6, 20, healthy())
    assert ch.log == []


def test_level_lost_on_a_pump_with_dry_run_limit_stops_a_no_pump() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 30, healthy(water_level=None))
    assert (10, StopPump(BIZ_SENSOR_UNAVAILABLE)) in ch.log


def test_flow_lost_with_level_fallback_only_warns() -> None:
    limits = ChannelLimits(channel="pump_drain", level_change_min=1.0, min_water_level=2.0)
    ch = Channel(limits)
    for t in range(0, 120):
        ch.tick(t, healthy(flow_l_min=None, water_level=80.0 - 0.2 * t))
    assert [type(a) for _, a in ch.log] == [RaiseAlert]


def test_blind_sensors_names_protections_that_went_blind() -> None:
    assert blind_sensors(healthy(), DRAIN) == ()
    assert blind_sensors(healthy(current_a=None, flow_age_s=99.0), DRAIN) == (Sensor.CURRENT, Sensor.FLOW)
    assert blind_sensors(healthy(water_level=None), DRAIN) == (Sensor.LEVEL,)
    no_level_limit = ChannelLimits(min_water_level=None)
    assert blind_sensors(healthy(water_level=None), no_level_limit) == ()
    fallback = ChannelLimits(level_change_min=1.0)
    assert blind_sensors(healthy(flow_l_min=None), fallback) == ()


def test_unconfigured_sensors_are_ignored() -> None:
    limits = ChannelLimits(current_sensor=False, flow_sensor=False, level_sensor=False, min_water_level=None)
    ch = Channel(limits)
    ch.walk(0, 600, ChannelInputs(desired_on=True, relay_on=True), dt=10)
    assert ch.log == []


def test_state_round_trips_through_json() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 20, healthy(current_a=None))
    ch.tick(21, healthy(current_a=2.0, flow_l_min=0.0))
    data = json.loads(json.dumps(ch.state.to_dict()))
    assert ChannelSafetyState.from_dict(data) == ch.state
    assert ChannelSafetyState.from_dict({}) == ChannelSafetyState()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"overcurrent_a": 0.0},
        {"idle_current_a": 2.0, "overcurrent_a": 1.5},
        {"no_flow_grace_s": -1.0},
        {"level_change_min": 0.0},
        {"settle_s": -1.0},
    ],
)
def test_nonsense_limits_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ChannelLimits(**kwargs)  # type: ignore[arg-type]


# Exact thresholds, exact state and exact alert details (each of these was a surviving mutant) --------


def test_a_reading_exactly_stale_after_s_old_still_counts() -> None:
    ch = Channel(DRAIN)
    assert ch.tick(0, healthy(current_a=2.3, current_age_s=30.0))[0] == StopPump(BIZ_OVERCURRENT)


def test_current_exactly_at_the_overcurrent_limit_is_not_an_overcurrent() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 60, healthy(current_a=1.5))
    assert ch.log == []
    assert ch.tick(61, healthy(current_a=1.51))[0] == StopPump(BIZ_OVERCURRENT)


def test_level_exactly_at_the_minimum_is_not_a_dry_run() -> None:
    ch = Channel(RECIRC_NC)
    ch.walk(0, 60, healthy(water_level=10.0))
    assert ch.log == []
    assert ch.tick(61, healthy(water_level=9.9))[0] == StopPump(BIZ_DRY_RUN)


def test_flow_exactly_at_the_minimum_is_good_flow_and_restarts_the_grace() -> None:
    ch = Channel(DRAIN)  # min_flow_l_min 1.0, grace 30 s
    ch.walk(0, 600, healthy(flow_l_min=1.0))
    assert ch.log == []
    # Flow last good at 600: a drop at 601 trips only once it is more than 30 s old.
    ch.walk(601, 630, healthy(flow_l_min=0.5))
    assert ch.log == []
    assert ch.tick(631, healthy(flow_l_min=0.5))[0] == StopPump(BIZ_NO_FLOW)


def test_flow_reaching_exactly_the_minimum_late_in_the_grace_is_not_no_flow() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 30, healthy(flow_l_min=0.5))  # low since switch-on, for exactly the grace
    ch.walk(31, 90, healthy(flow_l_min=1.0))  # then exactly the minimum: good flow, though the grace is over
    assert ch.log == []


def test_idle_readings_exactly_at_their_limits_are_not_a_stuck_pump() -> None:
    ch = Channel(RECIRC_NC)  # idle_current_a 0.1, min_flow_l_min 1.0
    ch.walk(0, 600, healthy(relay_on=False, current_a=0.1, flow_l_min=1.0))
    assert ch.log == []


def test_stuck_on_alert_carries_every_piece_of_evidence() -> None:
    ch = Channel(RECIRC_NC)
    ch.walk(0, 10, healthy(relay_on=False, desired_on=True, current_a=0.8, flow_l_min=11.0))
    assert ch.log == [
        (
            6,
            RaiseAlert(
                BIZ_PUMP_STUCK_ON,
                Severity.CRITICAL,
                {
                    "channel": "pump_recirc",
                    "desired_on": True,
                    "fail_safe": "NC",
                    "current_a": 0.8,
                    "idle_current_a": 0.1,
                    "flow_l_min": 11.0,
                    "min_flow_l_min": 1.0,
                },
                scope="pump_recirc",
            ),
        ),
        (6, LockChannel(BIZ_PUMP_STUCK_ON)),
    ]


def test_no_flow_alert_details_name_the_reading_and_the_limit() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 31, healthy(flow_l_min=0.25))
    assert ch.log[1] == (
        31,
        RaiseAlert(
            BIZ_NO_FLOW,
            Severity.CRITICAL,
            {"channel": "pump_drain", "variant": "flow", "flow_l_min": 0.25, "min_flow_l_min": 1.0},
            scope="pump_drain",
        ),
    )


LEVEL_DRAIN = ChannelLimits(channel="pump_drain", flow_sensor=False, level_change_min=1.0, min_water_level=2.0)


def test_no_level_change_alert_details_name_the_window() -> None:
    ch = Channel(LEVEL_DRAIN)
    ch.walk(0, 31, healthy(flow_l_min=None, water_level=40.0))
    assert ch.log[1] == (
        31,
        RaiseAlert(
            BIZ_NO_FLOW,
            Severity.CRITICAL,
            {
                "channel": "pump_drain",
                "variant": "level",
                "level_at_start": 40.0,
                "water_level": 40.0,
                "level_change_min": 1.0,
                "window_s": 30.0,
            },
            scope="pump_drain",
        ),
    )


def test_level_reference_is_taken_when_the_level_first_appears_after_switch_on() -> None:
    ch = Channel(LEVEL_DRAIN)
    ch.walk(0, 4, healthy(flow_l_min=None, water_level=None))  # level not there yet (within the sensor grace)
    assert ch.state.level_at_on is None and ch.state.level_ref_at is None
    ch.walk(5, 40, healthy(flow_l_min=None, water_level=50.0))  # then it never moves
    stops = [(t, a) for t, a in ch.log if isinstance(a, StopPump)]
    assert stops[0] == (36, StopPump(BIZ_NO_FLOW))  # reference taken at 5: > 30 s later
    alert = next(a for _, a in ch.log if isinstance(a, RaiseAlert) and a.code == BIZ_NO_FLOW)
    assert alert.details["level_at_start"] == 50.0


def test_a_half_taken_level_reference_is_taken_again() -> None:
    restored = ChannelSafetyState(on_since=0.0, flow_ok_at=0.0, level_at_on=50.0, level_ref_at=None)
    ch = Channel(LEVEL_DRAIN, restored)
    ch.walk(100, 140, healthy(flow_l_min=None, water_level=50.0))
    assert next((t, a) for t, a in ch.log if isinstance(a, StopPump)) == (131, StopPump(BIZ_NO_FLOW))


def test_switching_on_and_off_sets_exactly_the_timers_of_that_direction() -> None:
    limits = ChannelLimits(channel="pump_drain", flow_sensor=False, level_change_min=5.0, min_water_level=2.0)
    ch = Channel(limits)
    ch.tick(0, healthy(relay_on=False, flow_l_min=None))
    assert ch.state == ChannelSafetyState(off_since=0)
    ch.tick(10, healthy(flow_l_min=None, water_level=60.0))
    assert ch.state == ChannelSafetyState(on_since=10, level_at_on=60.0, level_ref_at=10, flow_ok_at=10)
    ch.tick(20, healthy(relay_on=False, flow_l_min=None))
    assert ch.state == ChannelSafetyState(off_since=20)
    ch.tick(30, healthy(flow_l_min=None, water_level=None))  # switched on without a level reading
    assert ch.state == ChannelSafetyState(on_since=30, flow_ok_at=30, unavailable=("level",), unavailable_since=30)


def test_switch_on_takes_the_level_reference_even_without_a_level_based_check() -> None:
    ch = Channel(DRAIN)
    ch.tick(0, healthy(water_level=60.0))
    assert (ch.state.level_at_on, ch.state.level_ref_at) == (60.0, 0)


def test_sensor_bookkeeping_is_cleared_when_every_sensor_is_back() -> None:
    ch = Channel(DRAIN)
    ch.walk(0, 15, healthy(current_a=None))
    assert (ch.state.unavailable, ch.state.unavailable_since, ch.state.alerted_unavailable) == (
        ("current",),
        0,
        ("current",),
    )
    ch.tick(16, healthy())
    assert (ch.state.unavailable, ch.state.unavailable_since, ch.state.alerted_unavailable) == ((), None, ())
    # A new dropout gets a fresh grace period rather than the old one's start.
    ch.log.clear()
    ch.walk(17, 27, healthy(relay_on=False, current_a=None))
    assert [t for t, a in ch.log if isinstance(a, RaiseAlert)] == [27]


def test_operator_reset_restarts_every_timer_but_keeps_flow_and_sensor_bookkeeping() -> None:
    state = ChannelSafetyState(
        on_since=1.0,
        off_since=2.0,
        level_at_on=3.0,
        level_ref_at=4.0,
        flow_ok_at=5.0,
        unavailable=("flow",),
        unavailable_since=6.0,
        alerted_unavailable=("flow",),
        latched=(BIZ_OVERCURRENT,),
        no_circulation_alerted=True,
    )
    assert operator_reset(state) == ChannelSafetyState(
        flow_ok_at=5.0, unavailable=("flow",), unavailable_since=6.0, alerted_unavailable=("flow",)
    )


def test_every_state_field_survives_to_dict_and_back() -> None:
    state = ChannelSafetyState(
        on_since=1.0,
        off_since=2.0,
        level_at_on=3.0,
        level_ref_at=4.0,
        flow_ok_at=5.0,
        unavailable=("flow", "level"),
        unavailable_since=6.0,
        alerted_unavailable=("flow",),
        latched=(BIZ_OVERCURRENT, BIZ_NO_FLOW),
        no_circulation_alerted=True,
    )
    data = state.to_dict()
    assert data == {
        "on_since": 1.0,
        "off_since": 2.0,
        "level_at_on": 3.0,
        "level_ref_at": 4.0,
        "flow_ok_at": 5.0,
        "unavailable": ["flow", "level"],
        "unavailable_since": 6.0,
        "alerted_unavailable": ["flow"],
        "latched": [BIZ_OVERCURRENT, BIZ_NO_FLOW],
        "no_circulation_alerted": True,
    }
    assert ChannelSafetyState.from_dict(json.loads(json.dumps(data))) == state


def test_sensors_that_are_not_wired_never_trip_anything() -> None:
    limits = ChannelLimits(current_sensor=False, flow_sensor=False, level_sensor=False, min_water_level=10.0)
    ch = Channel(limits)
    # Fresh but meaningless readings (e.g. from another pump on the same node) must not be used.
    ch.walk(0, 600, healthy(current_a=9.0, flow_l_min=0.0, water_level=1.0), dt=10)
    ch.walk(601, 700, healthy(relay_on=False, current_a=9.0, flow_l_min=50.0), dt=10)
    assert ch.log == []


def test_a_level_only_no_flow_check_is_blind_without_the_level() -> None:
    no_dry_run = ChannelLimits(flow_sensor=False, level_change_min=1.0, min_water_level=None)
    assert blind_sensors(healthy(flow_l_min=None, water_level=None), no_dry_run) == (Sensor.LEVEL,)
    with_flow = ChannelLimits(level_change_min=1.0, min_water_level=None)
    assert blind_sensors(healthy(water_level=None), with_flow) == ()
    nothing_needs_level = ChannelLimits(flow_sensor=False, min_water_level=None)
    assert blind_sensors(healthy(flow_l_min=None, water_level=None), nothing_needs_level) == ()


@pytest.mark.parametrize("name", ["overcurrent_a", "no_flow_grace_s", "stale_after_s"])
def test_positive_limits_reject_zero_and_accept_small_values(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be > 0$"):
        ChannelLimits(**{name: 0.0, "idle_current_a": 0.0})  # type: ignore[arg-type]
    assert getattr(ChannelLimits(**{name: 0.5, "idle_current_a": 0.0}), name) == 0.5  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["idle_current_a", "min_flow_l_min", "unavailable_grace_s", "settle_s"])
def test_non_negative_limits_reject_negatives_and_accept_zero(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be >= 0$"):
        ChannelLimits(**{name: -0.1})  # type: ignore[arg-type]
    assert getattr(ChannelLimits(**{name: 0.0}), name) == 0.0  # type: ignore[arg-type]


def test_idle_current_must_be_strictly_below_overcurrent() -> None:
    with pytest.raises(ValueError, match=r"^idle_current_a must be below overcurrent_a$"):
        ChannelLimits(idle_current_a=1.5, overcurrent_a=1.5)
    with pytest.raises(ValueError, match=r"^level_change_min must be > 0 or None$"):
        ChannelLimits(level_change_min=0.0)
