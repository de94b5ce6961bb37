"""NC recirculation: simulated days under explicit local and monotonic times."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.water.config import WaterCycleConfig, water_cycle_from_dict
from gateway.water.recirc import RecircDecision, RecircState, decide_recirc, scheduled_on

MSK = ZoneInfo("Europe/Moscow")  # no DST
BERLIN = ZoneInfo("Europe/Berlin")
ON, OFF = RecircDecision.ON, RecircDecision.OFF


def cfg(*windows: tuple[str, str, float], **recirc: Any) -> WaterCycleConfig:
    schedule = [{"from": f, "to": t, "duty_cycle": d} for f, t, d in windows]
    return water_cycle_from_dict({"recirc": {"schedule": schedule, **recirc}})


def walk(
    c: WaterCycleConfig, start_wall: float, hours: float, tz: ZoneInfo = MSK, dt_s: float = 30.0
) -> list[tuple[float, datetime, RecircDecision]]:
    """Tick every dt_s: (monotonic, local time, decision)."""
    state = RecircState()
    out = []
    mono0 = 5000.0
    for i in range(int(hours * 3600 / dt_s)):
        local = datetime.fromtimestamp(start_wall + i * dt_s, tz)
        state, d = decide_recirc(c, state, local, mono0 + i * dt_s)
        out.append((mono0 + i * dt_s, local, d))
    return out


def runs(ticks: list[tuple[float, datetime, RecircDecision]]) -> list[tuple[RecircDecision, float, float]]:
    """Stretches of equal decisions: (decision, start, length in seconds, up to the next change)."""
    out: list[tuple[RecircDecision, float, float]] = []
    for i, (t, _, d) in enumerate(ticks):
        if i == 0 or d != ticks[i - 1][2]:
            out.append((d, t, 0.0))
        end = ticks[i + 1][0] if i + 1 < len(ticks) else t
        dec, start, _ = out[-1]
        out[-1] = (dec, start, end - start)
    return out


def midnight(tz: ZoneInfo, y: int = 2026, m: int = 1, d: int = 5) -> float:
    return datetime(y, m, d, tzinfo=tz).timestamp()


def test_duty_half_over_20_minutes_is_10_on_then_10_off() -> None:
    ticks = walk(cfg(("00:00", "23:59", 0.5)), midnight(MSK), hours=2, dt_s=60)
    by_minute = [d for _, _, d in ticks]
    assert by_minute[:40] == [ON] * 10 + [OFF] * 10 + [ON] * 10 + [OFF] * 10
    full = runs(ticks)[:-1]  # the last run is cut by the end of the walk
    assert all(length == 600 for _, _, length in full)


def test_a_whole_day_never_has_off_longer_than_the_maximum() -> None:
    c = cfg(("06:00", "22:00", 0.5), ("22:00", "06:00", 0.25), max_recirc_off_minutes=10)
    ticks = walk(c, midnight(MSK), hours=24)
    stretches = runs(ticks)
    assert max(length for d, _, length in stretches if d is OFF) <= 600
    assert min(length for d, _, length in stretches[:-1] if d is ON) >= 120  # min_on_minutes
    day = [d for _, local, d in ticks if 6 <= local.hour < 22]
    night = [d for _, local, d in ticks if not 6 <= local.hour < 22]
    assert day.count(ON) / len(day) == 0.5
    # Night: 5 min ON share, OFF capped at 10 min, so recirc runs more than the bare 25 %.
    assert night.count(ON) / len(night) > 0.25


def test_capped_off_is_followed_by_the_on_share_then_off_again() -> None:
    # duty 0.25 over 20 min: ON 5, wanted OFF 15 but capped at 10 ⇒ forced ON for max(5, 2) min.
    ticks = walk(cfg(("00:00", "23:59", 0.25)), midnight(MSK), hours=1, dt_s=60)
    assert [(d, length / 60) for d, _, length in runs(ticks)[:4]] == [(ON, 5), (OFF, 10), (ON, 10), (OFF, 10)]


def test_outside_all_windows_the_pump_is_off_but_never_beyond_the_maximum() -> None:
    c = cfg(("08:00", "18:00", 1.0), max_recirc_off_minutes=10, min_on_minutes=2)
    ticks = walk(c, midnight(MSK) + 20 * 3600, hours=1, dt_s=60)  # 20:00-21:00
    assert [(d, length / 60) for d, _, length in runs(ticks)[:4]] == [(OFF, 10), (ON, 2), (OFF, 10), (ON, 2)]
    assert scheduled_on(c.recirc, datetime(2026, 1, 5, 12, tzinfo=MSK))
    assert not scheduled_on(c.recirc, datetime(2026, 1, 5, 20, tzinfo=MSK))


def test_duty_one_is_always_on_and_duty_zero_only_the_forced_minimum() -> None:
    always = walk(cfg(("00:00", "23:59", 1.0)), midnight(MSK), hours=3)
    assert {d for _, _, d in always} == {ON}
    never = runs(walk(cfg(("00:00", "23:59", 0.0)), midnight(MSK), hours=1, dt_s=60))
    assert [(d, length / 60) for d, _, length in never[:3]] == [(OFF, 10), (ON, 2), (OFF, 10)]


def test_disabled_recirc_or_manual_mode_leaves_the_relay_alone() -> None:
    local = datetime(2026, 1, 5, 3, tzinfo=MSK)
    busy = RecircState(on=False, off_since=10.0)
    off = water_cycle_from_dict({"recirc": {"enabled": False}})
    assert decide_recirc(off, busy, local, 100.0) == (RecircState(), RecircDecision.LEAVE_ALONE)
    manual = water_cycle_from_dict({"mode": "MANUAL"})
    assert decide_recirc(manual, busy, local, 100.0) == (RecircState(), RecircDecision.LEAVE_ALONE)


def test_off_limit_uses_monotonic_time_when_the_wall_clock_jumps_back() -> None:
    c = cfg(("08:00", "18:00", 1.0))
    state, d = decide_recirc(c, RecircState(), datetime(2026, 1, 5, 20, 0, tzinfo=MSK), 100.0)
    assert d is OFF
    # NTP pulls the wall clock back an hour; 10 monotonic minutes later the pump must be ON anyway.
    state, d = decide_recirc(c, state, datetime(2026, 1, 5, 19, 5, tzinfo=MSK), 699.0)
    assert d is OFF
    state, d = decide_recirc(c, state, datetime(2026, 1, 5, 19, 6, tzinfo=MSK), 700.0)
    assert d is ON


def test_dst_fall_back_night_keeps_the_off_limit() -> None:
    start = datetime(2026, 10, 24, 22, tzinfo=UTC).timestamp()  # covers 03:00 CEST → 02:00 CET
    ticks = walk(cfg(("06:00", "22:00", 0.5)), start, hours=8, tz=BERLIN)
    assert max(length for d, _, length in runs(ticks) if d is OFF) <= 600


def test_forced_on_is_held_even_if_the_schedule_wants_off() -> None:
    c = cfg(("08:00", "18:00", 1.0), min_on_minutes=3)
    t0 = datetime(2026, 1, 5, 20, tzinfo=MSK)
    state, _ = decide_recirc(c, RecircState(), t0, 0.0)
    state, d = decide_recirc(c, state, t0 + timedelta(minutes=10), 600.0)
    assert d is ON and state.hold_on_until == 780.0
    state, d = decide_recirc(c, state, t0 + timedelta(minutes=12), 779.0)
    assert d is ON
    state, d = decide_recirc(c, state, t0 + timedelta(minutes=13), 780.0)
    assert d is OFF and state.off_since == 780.0


def test_state_round_trips_through_json() -> None:
    c = cfg(("08:00", "18:00", 1.0))
    state, _ = decide_recirc(c, RecircState(), datetime(2026, 1, 5, 20, tzinfo=MSK), 0.0)
    state, _ = decide_recirc(c, state, datetime(2026, 1, 5, 20, 10, tzinfo=MSK), 600.0)
    assert RecircState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    assert RecircState.from_dict({}) == RecircState()
