"""can_run_pump returns exactly the documented decision, not just the right reason string (mutation-tested)."""

from __future__ import annotations

from dataclasses import replace

from gateway.safety.interlock import InterlockDecision, InterlockSnapshot, can_run_pump
from gateway.safety.rules import BIZ_DRY_RUN, BIZ_OVERCURRENT, FailSafe, Sensor

NC = InterlockSnapshot(channel="recirc", fail_safe=FailSafe.NC, min_water_level=10.0)
NO = replace(NC, fail_safe=FailSafe.NO, water_level=50.0, level_age_s=1.0)


def test_an_nc_return_with_nothing_against_this_pump_is_allowed_with_reason_ok() -> None:
    unrelated = replace(
        NC, active_alert_codes=frozenset({BIZ_OVERCURRENT}), unavailable_sensors=(Sensor.LEVEL,), recent_failures=9
    )
    assert can_run_pump(unrelated) == InterlockDecision(True, "ok", None)


def test_an_nc_pump_with_its_own_critical_alert_is_refused_with_that_alert() -> None:
    own = replace(NC, own_alert_codes=frozenset({BIZ_DRY_RUN, "biz_high_ph"}))
    assert can_run_pump(own) == InterlockDecision(False, "alert:biz_dry_run", None)
    not_critical = replace(NC, own_alert_codes=frozenset({"biz_high_ph"}))
    assert can_run_pump(not_critical) == InterlockDecision(True, "ok", None)


def test_a_tripped_watchdog_refuses_a_no_start_outright() -> None:
    assert can_run_pump(replace(NO, watchdog_tripped=True)) == InterlockDecision(False, "watchdog_tripped", None)
