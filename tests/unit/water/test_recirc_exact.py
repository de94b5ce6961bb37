"""decide_recirc: exact timers, sub-minute schedule boundaries and the actual-state OFF clock (mutation-tested)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.water.config import WaterCycleConfig, water_cycle_from_dict
from gateway.water.recirc import RecircDecision, RecircState, decide_recirc, scheduled_on

TZ = ZoneInfo("UTC")
ON, OFF = RecircDecision.ON, RecircDecision.OFF


def cfg(*windows: tuple[str, str, float], **recirc: Any) -> WaterCycleConfig:
    schedule = [{"from": f, "to": t, "duty_cycle": d} for f, t, d in windows]
    return water_cycle_from_dict({"mode": "RECIRCULATING", "recirc": {"enabled": True, "schedule": schedule, **recirc}})


def at(hh: int, mm: int, ss: int = 0, us: int = 0) -> datetime:
    return datetime(2026, 1, 5, hh, mm, ss, us, tzinfo=TZ)


def test_state_serialises_every_timer() -> None:
    state = RecircState(on=False, on_since=1.0, off_since=2.0, hold_on_until=3.0, relay_off_since=4.0)
    assert state.to_dict() == {
        "on": False,
        "on_since": 1.0,
        "off_since": 2.0,
        "hold_on_until": 3.0,
        "relay_off_since": 4.0,
    }
    assert RecircState.from_dict(state.to_dict()) == state


def test_the_duty_share_boundary_is_resolved_to_the_second() -> None:
    c = cfg(("08:00", "09:00", 0.1), period_minutes=5).recirc  # ON for the first 30 s of every 5 minutes
    assert scheduled_on(c, at(8, 0, 29))
    assert scheduled_on(c, at(8, 0, 29, 999_999))
    assert not scheduled_on(c, at(8, 0, 30))
    assert not scheduled_on(c, at(8, 0, 30, 500_000))


def test_a_switch_to_on_records_its_start_and_holds_for_min_on() -> None:
    c = cfg(("08:00", "09:00", 0.1), period_minutes=10, min_on_minutes=2)  # schedule ON for 1 min only
    state, d = decide_recirc(c, RecircState(on=False, off_since=0.0), at(8, 0), 100.0, relay_on=False)
    assert d is ON
    assert state == RecircState(on=True, on_since=100.0, off_since=None, hold_on_until=220.0, relay_off_since=0.0)
    decisions = []
    for s in (90, 119, 120):
        local = datetime.fromtimestamp(at(8, 0).timestamp() + s, TZ)
        state, d = decide_recirc(c, state, local, 100.0 + s, relay_on=True)
        decisions.append(d)
    assert decisions == [ON, ON, OFF]  # held past the 1-minute share until min_on (2 min) is over


def test_a_relay_found_off_starts_the_off_clock_at_once() -> None:
    c = cfg(("08:00", "09:00", 0.5))
    state, d = decide_recirc(c, RecircState(), at(10, 0), 50.0, relay_on=False)  # outside every window
    assert d is OFF
    assert state == RecircState(on=False, on_since=None, off_since=50.0, hold_on_until=None, relay_off_since=50.0)


def test_once_the_limit_is_reached_a_relay_that_stays_off_is_asked_on_every_tick() -> None:
    c = cfg(("08:00", "09:00", 0.1), max_recirc_off_minutes=10, period_minutes=60, min_on_minutes=2)
    state, _ = decide_recirc(c, RecircState(), at(10, 0), 0.0, relay_on=False)  # outside every window
    decisions = []
    for s in range(30, 3600, 30):
        local = datetime.fromtimestamp(at(10, 0).timestamp() + s, TZ)
        state, d = decide_recirc(c, state, local, float(s), relay_on=False)  # every switch to ON fails
        decisions.append((s, d))
    assert all(d is OFF for s, d in decisions if s < 600)
    assert all(d is ON for s, d in decisions if s >= 600)  # the OFF clock never restarts while the relay is off
    assert state.relay_off_since == 0.0


def test_a_running_pump_is_never_forced_by_the_off_limit() -> None:
    c = cfg(("08:00", "09:00", 0.1), max_recirc_off_minutes=0.01)  # 0.6 s
    state, d = decide_recirc(c, RecircState(on=True, on_since=0.0), at(10, 0), 500.0, relay_on=True)
    assert d is OFF and state.hold_on_until is None


def test_forced_on_outside_every_window_is_held_for_min_on_only() -> None:
    c = cfg(("08:00", "09:00", 0.1), max_recirc_off_minutes=10, min_on_minutes=0.5)
    state, _ = decide_recirc(c, RecircState(), at(10, 0), 0.0, relay_on=False)
    state, d = decide_recirc(c, state, at(10, 10), 600.0, relay_on=False)
    assert d is ON and state.hold_on_until == 630.0
