"""decide_recirc measures the max-OFF limit from the relay's actual state."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.water.config import water_cycle_from_dict
from gateway.water.recirc import RecircDecision, RecircState, decide_recirc

TZ = ZoneInfo("UTC")
CFG = water_cycle_from_dict(
    {
        "mode": "RECIRCULATING",
        "recirc": {
            "enabled": True,
            "schedule": [{"from": "00:00", "to": "23:59", "duty_cycle": 0.1}],
            "max_recirc_off_minutes": 10,
            "period_minutes": 60,
            "min_on_minutes": 2,
        },
    }
)


def test_a_refused_on_does_not_restart_the_off_clock() -> None:
    """The duty cycle asks ON at the limit; the switch is refused (relay stays OFF); the limit keeps counting."""
    start = datetime(2026, 1, 1, 0, 7, tzinfo=TZ)  # inside the OFF part of the period
    state, decision = decide_recirc(CFG, RecircState(), start, 0.0, relay_on=True)
    assert decision is RecircDecision.OFF
    t = 0.0
    forced_at = None
    while t < 3600:
        t += 1.0
        local = datetime.fromtimestamp(start.timestamp() + t, TZ)
        state, decision = decide_recirc(CFG, state, local, t, relay_on=False)  # the relay never turns ON
        if decision is RecircDecision.ON and forced_at is None:
            forced_at = t
    assert forced_at is not None and forced_at <= 600.0
    # Still OFF after an hour: the OFF stretch is measured from the first OFF, not from the last decision.
    assert state.relay_off_since == 0.0


def test_without_relay_state_the_last_decision_stands_for_it() -> None:
    start = datetime(2026, 1, 1, 0, 7, tzinfo=TZ)
    state, _ = decide_recirc(CFG, RecircState(), start, 0.0)
    local = datetime(2026, 1, 1, 0, 18, tzinfo=TZ)
    _, decision = decide_recirc(CFG, state, local, 660.0)
    assert decision is RecircDecision.ON
