"""Schedule planning: local times across DST (Europe/Berlin), phase-dependent times, missed runs, misfire policy."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from gateway.automation.schedule_plan import LocalTimesTrigger, Misfire, Plan, due_fire_times, local_instant, plan_runs

BERLIN = ZoneInfo("Europe/Berlin")


def _fires(trigger: LocalTimesTrigger | CronTrigger, start: datetime, end: datetime) -> list[datetime]:
    return due_fire_times(trigger, start, end)


def _utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def test_daily_times_fire_at_local_wall_times_before_and_after_dst() -> None:
    trig = LocalTimesTrigger(BERLIN, lambda d: [time(8), time(18)])
    fires = _fires(trig, _utc(2026, 3, 27, 12), _utc(2026, 3, 31, 0))
    local = [f.astimezone(BERLIN).strftime("%m-%d %H:%M%z") for f in fires]
    assert local == ["03-27 18:00+0100", "03-28 08:00+0100", "03-28 18:00+0100", "03-29 08:00+0200",
                     "03-29 18:00+0200", "03-30 08:00+0200", "03-30 18:00+0200"]
    # 08:00 local is 07:00 UTC in winter and 06:00 UTC in summer.
    assert [f.astimezone(UTC).hour for f in fires[1::2]] == [7, 6, 6]


def test_spring_forward_runs_a_missing_time_once_shifted_by_the_gap() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that night.
    trig = LocalTimesTrigger(BERLIN, lambda d: [time(2, 30)])
    fires = _fires(trig, _utc(2026, 3, 27, 12), _utc(2026, 3, 31, 12))
    assert [f.astimezone(BERLIN).isoformat() for f in fires] == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00"]


def test_fall_back_runs_an_ambiguous_time_once_where_cron_runs_it_twice() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice that night.
    start, end = _utc(2026, 10, 24, 12), _utc(2026, 10, 26, 12)
    cron = _fires(CronTrigger(hour=2, minute=30, timezone=BERLIN), start, end)
    assert len(cron) == 3  # apscheduler's CronTrigger: 02:30 CEST and 02:30 CET on the 25th, then the 26th
    ours = _fires(LocalTimesTrigger(BERLIN, lambda d: [time(2, 30)]), start, end)
    assert [f.astimezone(BERLIN).isoformat() for f in ours] == ["2026-10-25T02:30:00+02:00",
                                                                 "2026-10-26T02:30:00+01:00"]


def test_a_day_long_simulation_across_both_dst_nights_fires_each_time_once() -> None:
    times = [time(0, 30), time(2, 0), time(2, 30), time(3, 0), time(12, 0), time(23, 59)]
    trig = LocalTimesTrigger(BERLIN, lambda d: times)
    for day in (date(2026, 3, 29), date(2026, 10, 25)):
        start = local_instant(day, time(0), BERLIN) - timedelta(microseconds=1)
        end = local_instant(day + timedelta(days=1), time(0), BERLIN) - timedelta(microseconds=1)
        # Walk the day minute by minute like a running scheduler would, collecting fires.
        fired, last, t = [], start, start
        while t < end:
            t = min(t + timedelta(minutes=1), end)
            due = due_fire_times(trig, last, t)
            fired += due
            last = due[-1] if due else last
        walls = [trig.wall_time_of(f) for f in fired]
        assert [w[1] for w in walls if w] == times if day.month == 10 else [
            time(0, 30), time(2, 0), time(3, 0), time(12, 0), time(23, 59)]
        assert len(fired) == len(set(fired))
    # Spring forward: 02:00 and 02:30 do not exist; 02:00 collapses onto 03:00 and 02:30 runs at 03:30.
    spring = LocalTimesTrigger(BERLIN, lambda d: [time(2, 30), time(3, 0)])
    assert [(i.astimezone(BERLIN).strftime("%H:%M"), t) for i, t in spring.occurrences(date(2026, 3, 29))] == [
        ("03:00", time(3, 0)), ("03:30", time(2, 30))]


def test_times_follow_the_phase_of_each_date() -> None:
    switch = date(2026, 5, 10)
    trig = LocalTimesTrigger(BERLIN, lambda d: [time(8)] if d < switch else [time(7), time(19)])
    fires = _fires(trig, _utc(2026, 5, 8, 12), _utc(2026, 5, 11, 12))
    assert [f.astimezone(BERLIN).strftime("%d %H:%M") for f in fires] == ["09 08:00", "10 07:00", "10 19:00",
                                                                          "11 07:00"]
    assert LocalTimesTrigger(BERLIN, lambda d: []).get_next_fire_time(None, _utc(2026, 5, 1)) is None


def test_next_fire_time_without_previous_is_at_or_after_now() -> None:
    trig = LocalTimesTrigger(UTC, lambda d: [time(8)])
    assert trig.get_next_fire_time(None, _utc(2026, 5, 1, 8)) == _utc(2026, 5, 1, 8)
    assert trig.get_next_fire_time(_utc(2026, 5, 1, 8), _utc(2026, 5, 1, 8)) == _utc(2026, 5, 2, 8)


def test_misfire_policies() -> None:
    now = _utc(2026, 5, 3, 12)
    due = [now - timedelta(hours=h) for h in (30, 6, 0.25, 0.1)]
    grace = plan_runs(Misfire.GRACE, due, now, grace_s=1800)
    assert grace == Plan(run=due[3], skipped=(due[0], due[1]), coalesced=1)
    assert plan_runs(Misfire.GRACE, due[:2], now, 1800) == Plan(None, (due[0], due[1]), 0)
    assert plan_runs(Misfire.STATE, due, now, 0) == Plan(due[3], (), 3)
    assert plan_runs(Misfire.COALESCE, due[:1], now, 0) == Plan(due[0], (), 0)
    assert plan_runs(Misfire.GRACE, [], now, 10) == Plan(None)
