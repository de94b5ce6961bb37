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
