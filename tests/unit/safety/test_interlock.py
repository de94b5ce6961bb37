"""can_run_pump decisions (SPEC §6, seed 003 §16.1)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.safety.interlock import CRITICAL_ALERT_CODES, InterlockDecision, InterlockSnapshot, can_run_pump
from gateway.safety.rules import FailSafe, RaiseAlert, Sensor, Severity

OK = InterlockSnapshot(
    channel="pump_drain",
    water_level=55.0,
    level_age_s=2.0,
    stale_after_s=30.0,
    min_water_level=10.0,
    requires_level=True,
    recent_failures=0,
    max_failures=3,
)


def test_all_clear_allows_the_start() -> None:
    assert can_run_pump(OK) == InterlockDecision(True, "ok", None)


def test_critical_codes_are_the_four_pump_safety_alerts() -> None:
    assert frozenset({"biz_overcurrent", "biz_no_flow", "biz_dry_run", "biz_pump_stuck_on"}) == CRITICAL_ALERT_CODES


def test_locked_channel_is_refused_with_the_lock_code() -> None:
    d = can_run_pump(replace(OK, locked_code="biz_overcurrent"))
    assert (d.allowed, d.reason, d.raise_alert) == (False, "locked:biz_overcurrent", None)


@pytest.mark.parametrize("code", sorted(CRITICAL_ALERT_CODES))
def test_any_active_critical_alert_in_the_zone_refuses(code: str) -> None:
    d = can_run_pump(replace(OK, active_alert_codes=frozenset({code, "biz_high_ph"})))
    assert (d.allowed, d.reason) == (False, f"alert:{code}")


def test_non_critical_alerts_do_not_block() -> None:
    active = frozenset({"biz_high_ph", "biz_sensor_unavailable", "infra_upstream_unreachable"})
    assert can_run_pump(replace(OK, active_alert_codes=active)).allowed


@pytest.mark.parametrize(("level", "age"), [(None, None), (55.0, None), (55.0, 31.0), (float("nan"), 1.0)])
def test_missing_or_stale_level_refuses_when_the_channel_needs_one(level: float | None, age: float | None) -> None:
    d = can_run_pump(replace(OK, water_level=level, level_age_s=age))
    assert (d.allowed, d.reason, d.raise_alert) == (False, "level_unavailable", None)


def test_missing_level_is_fine_for_a_channel_that_does_not_need_one() -> None:
    snap = replace(OK, water_level=None, level_age_s=None, requires_level=False)
    assert can_run_pump(snap).allowed


def test_low_level_refuses_and_raises_dry_run() -> None:
    d = can_run_pump(replace(OK, water_level=7.5))
    assert (d.allowed, d.reason) == (False, "dry_run")
    assert d.raise_alert == RaiseAlert(
        "biz_dry_run",
        Severity.CRITICAL,
        {"channel": "pump_drain", "water_level": 7.5, "min_level": 10.0},
        scope="pump_drain",
    )


def test_level_exactly_at_minimum_is_allowed() -> None:
    assert can_run_pump(replace(OK, water_level=10.0)).allowed


def test_stale_low_level_is_not_used_for_dry_run_when_level_is_optional() -> None:
    d = can_run_pump(replace(OK, water_level=1.0, level_age_s=300.0, requires_level=False))
    assert d.allowed


def test_fill_channel_without_minimum_may_start_on_an_empty_tank() -> None:
    assert can_run_pump(replace(OK, channel="pump_fill", water_level=0.0, min_water_level=None)).allowed


def test_too_many_recent_failures_refuses() -> None:
    assert can_run_pump(replace(OK, recent_failures=2)).allowed
    d = can_run_pump(replace(OK, recent_failures=3))
    assert (d.allowed, d.reason) == (False, "too_many_failures")


def test_blind_protection_refuses_a_no_pump_but_not_the_nc_recirc() -> None:
    d = can_run_pump(replace(OK, unavailable_sensors=(Sensor.CURRENT,)))
    assert (d.allowed, d.reason) == (False, "sensor_unavailable:current")
    nc = replace(OK, channel="pump_recirc", unavailable_sensors=(Sensor.CURRENT,), fail_safe=FailSafe.NC)
    assert can_run_pump(nc).allowed


def test_first_refusal_wins_in_documented_order() -> None:
    worst = replace(
        OK,
        locked_code="biz_no_flow",
        active_alert_codes=frozenset({"biz_overcurrent"}),
        water_level=1.0,
        recent_failures=9,
        unavailable_sensors=(Sensor.FLOW,),
    )
    assert can_run_pump(worst).reason == "locked:biz_no_flow"
    assert can_run_pump(replace(worst, locked_code=None)).reason == "alert:biz_overcurrent"
    no_alerts = replace(worst, locked_code=None, active_alert_codes=frozenset())
    assert can_run_pump(no_alerts).reason == "dry_run"
    assert can_run_pump(replace(no_alerts, water_level=None)).reason == "level_unavailable"
    assert can_run_pump(replace(no_alerts, water_level=50.0)).reason == "too_many_failures"
    assert can_run_pump(replace(no_alerts, water_level=50.0, recent_failures=0)).reason == "sensor_unavailable:flow"
