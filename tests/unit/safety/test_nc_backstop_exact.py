"""The rules' NC max-OFF backstop: exact alert contents and flag bookkeeping (mutation-tested)."""

from __future__ import annotations

import pytest

from gateway.safety.rules import (
    BIZ_NO_CIRCULATION,
    BIZ_NO_FLOW,
    BIZ_OVERCURRENT,
    ChannelInputs,
    ChannelLimits,
    ChannelSafetyState,
    FailSafe,
    RaiseAlert,
    ResolveAlert,
    SafetyAction,
    Severity,
    evaluate,
)

LIMITS = ChannelLimits(
    channel="recirc",
    fail_safe=FailSafe.NC,
    max_off_s=600.0,
    current_sensor=False,
    flow_sensor=False,
    level_sensor=False,
)
OFF = ChannelInputs(desired_on=False, relay_on=False)
RUNNING = ChannelInputs(desired_on=True, relay_on=True)


def _tick(state: ChannelSafetyState, inputs: ChannelInputs, t: float) -> tuple[ChannelSafetyState, list[SafetyAction]]:
    new, actions = evaluate(state, inputs, LIMITS, t)
    return new, list(actions)


def test_no_circulation_alert_names_the_pump_how_long_it_is_off_and_which_locks_hold_it() -> None:
    state, _ = _tick(ChannelSafetyState(latched=(BIZ_OVERCURRENT, BIZ_NO_FLOW)), OFF, 100.0)
    state, actions = _tick(state, OFF, 700.34)
    assert actions == [
        RaiseAlert(
            BIZ_NO_CIRCULATION,
            Severity.CRITICAL,
            {"channel": "recirc", "off_s": 600.3, "locked_by": [BIZ_OVERCURRENT, BIZ_NO_FLOW]},
            scope="recirc",
        )
    ]
    assert state.no_circulation_alerted is True


def test_running_again_resolves_the_alert_once_and_clears_the_flag() -> None:
    state, _ = _tick(ChannelSafetyState(latched=(BIZ_OVERCURRENT,)), OFF, 0.0)
    state, _ = _tick(state, OFF, 600.0)
    state = ChannelSafetyState.from_dict({**state.to_dict(), "latched": []})  # the operator reset the lock
    resolves = []
    for t in (601.0, 602.0, 603.0):
        state, actions = _tick(state, RUNNING, t)
        resolves += [a for a in actions if isinstance(a, ResolveAlert)]
    assert resolves == [ResolveAlert(BIZ_NO_CIRCULATION, scope="recirc")]
    assert state.no_circulation_alerted is False


def test_max_off_must_be_positive_when_set() -> None:
    with pytest.raises(ValueError, match=r"^max_off_s must be > 0 or None$"):
        ChannelLimits(max_off_s=0.0)
    assert ChannelLimits(max_off_s=0.5).max_off_s == 0.5
