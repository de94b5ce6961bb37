"""Volume integration from flow samples and the daily rollup."""

from __future__ import annotations

import math
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.water.usage import DailyUsage, Gap, UsageRun, integrate_volume, rollup_daily

MSK = ZoneInfo("Europe/Moscow")


def test_constant_flow_for_a_minute_is_its_rate_in_litres() -> None:
    samples = [(float(t), 10.0) for t in range(0, 61, 5)]
    u = integrate_volume(samples, 0.0, 60.0)
    assert u.volume_l == pytest.approx(10.0)
    assert (u.duration_ms, u.covered_s, u.gaps, u.sample_count) == (60_000, 60.0, (), 13)
    assert u.avg_flow_l_min == pytest.approx(10.0)


def test_linear_ramp_is_integrated_exactly_by_trapezoids() -> None:
    samples = [(float(t), 12.0 * t / 60) for t in range(0, 61, 10)]  # 0 → 12 L/min over a minute
    assert integrate_volume(samples, 0.0, 60.0).volume_l == pytest.approx(6.0)


def test_window_clips_and_interpolates_at_its_edges() -> None:
    samples = [(0.0, 0.0), (60.0, 12.0), (120.0, 12.0)]
    u = integrate_volume(samples, 30.0, 90.0, max_gap_s=60.0)
    # 30→60: 6→12 L/min = 4.5 L; 60→90: 12 L/min = 6 L.
    assert u.volume_l == pytest.approx(10.5)
    assert u.sample_count == 1


def test_gap_longer_than_the_limit_is_left_out_and_reported() -> None:
    samples = [(0.0, 6.0), (10.0, 6.0), (20.0, 6.0), (200.0, 6.0), (210.0, 6.0)]
    u = integrate_volume(samples, 0.0, 210.0, max_gap_s=30.0)
    assert u.gaps == (Gap(20.0, 200.0),) and u.gaps[0].seconds == 180.0
    assert u.covered_s == 30.0
    assert u.volume_l == pytest.approx(3.0)  # 30 s at 6 L/min, not 21 L
    assert u.avg_flow_l_min == pytest.approx(6.0)


def test_no_samples_means_no_volume_and_no_average() -> None:
    u = integrate_volume([], 100.0, 160.0)
    assert (u.volume_l, u.avg_flow_l_min, u.covered_s, u.gaps) == (0.0, None, 0.0, (Gap(100.0, 160.0),))


def test_edges_hold_the_nearest_sample_only_within_the_gap_limit() -> None:
    near = integrate_volume([(5.0, 6.0), (55.0, 6.0)], 0.0, 60.0, max_gap_s=60.0)
    assert near.volume_l == pytest.approx(6.0) and near.gaps == ()
    far = integrate_volume([(100.0, 6.0)], 0.0, 60.0, max_gap_s=30.0)
    assert far.volume_l == 0.0 and far.gaps == (Gap(0.0, 60.0),)
    old = integrate_volume([(-100.0, 6.0)], 0.0, 60.0, max_gap_s=30.0)
    assert old.volume_l == 0.0 and old.gaps == (Gap(0.0, 60.0),)


def test_unsorted_duplicate_negative_and_nan_samples_are_handled() -> None:
    samples = [
        (20.0, 6.0),
        (0.0, 6.0),
        (10.0, 99.0),
        (10.0, 6.0),
        (30.0, math.nan),
        (30.0, -0.1),
        (60.0, 0.0),
    ]
    u = integrate_volume(samples, 0.0, 60.0)
    # 0-20 s at 6 L/min (2 L), ramp to 0 at 30 s (negative noise clamped; 0.5 L), then 0.
    assert u.volume_l == pytest.approx(2.5)
    assert u.sample_count == 5


def test_end_before_start_is_an_error() -> None:
    with pytest.raises(ValueError):
        integrate_volume([], 10.0, 5.0)


def test_daily_rollup_in_local_days_splits_runs_across_midnight() -> None:
    def wall(d: int, h: int, m: int = 0) -> float:
        return datetime(2026, 1, d, h, m, tzinfo=MSK).timestamp()

    runs = [
        UsageRun("z1", "pump_irrig", wall(5, 8), wall(5, 8, 10), 20.0),
        UsageRun("z1", "pump_irrig", wall(5, 23, 50), wall(6, 0, 10), 40.0),  # 10 min each side
        UsageRun("z2", "pump_irrig", wall(6, 2), wall(6, 2, 5), 5.0),
        UsageRun("z1", "pump_recirc", wall(6, 6), wall(6, 7), 600.0, irrigation=False),
        UsageRun("z1", "pump_irrig", wall(6, 1), wall(6, 1), 3.0),  # instant run: all on its day
    ]
    assert rollup_daily(runs, MSK) == [
        DailyUsage(date(2026, 1, 5), "z1", pytest.approx(40.0), 2),  # type: ignore[arg-type]
        DailyUsage(date(2026, 1, 6), "z1", pytest.approx(623.0), 1),  # type: ignore[arg-type]
        DailyUsage(date(2026, 1, 6), "z2", 5.0, 1),
    ]


def test_daily_rollup_of_nothing_is_empty() -> None:
    assert rollup_daily([], MSK) == []
