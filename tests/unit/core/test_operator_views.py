"""The operator page's words and marks: event sentences, reading states, manual forms, chart target band."""

from __future__ import annotations

import pytest

from gateway.telemetry_metrics import Metric
from gateway.web.events_text import event_sentence
from gateway.web.manual import ManualError, explain_refusal, parse_manual, water_actions_valid
from gateway.web.plan_view import reading_state
from gateway.web.series import RANGES, ChartPoint, ChartSeries
from gateway.web.svg import activity_svg, chart_svg

TZ = "Europe/Moscow"  # UTC+3 all year: 1796200000 is 2026-12-02 08:26:40 UTC, 11:26 local


def test_events_read_as_sentences_with_local_times():
    details = {"trigger": "operator", "by": "admin (web)", "water_level": 81.4, "ec": 1.52}
    started = event_sentence("WATER_CHANGE_STARTED", {**details, "solution_started_at": 1796200000.4}, TZ)
    assert started == (
        "Water change started by the operator by admin (web)"
        " (level 81 %, EC 1.52 mS/cm, old solution made 2026-12-02 11:26)."
    )
    assert "=" not in started
    dose_details = {"parameter": "ph", "reagent": "ph_down", "ml": 1.25, "value": 6.31, "target": 6.0}
    dose = event_sentence("DOSE", dose_details, TZ)
    assert dose == "Dosed 1.2 mL of pH down (pH was 6.31, aiming at 6.00)."
    assert event_sentence("IRRIGATION", {"scheduled_at": "2026-12-02T08:00:00+03:00", "duration_s": 90}, TZ) == (
        "Irrigation for 1 min (scheduled 2026-12-02 08:00)."
    )
    assert event_sentence("DOSE", {"reagent": "ph_up", "ml": 2, "simulated": True}, TZ).endswith("(simulated)")
    # Unknown types and odd details still read as words, local times included.
    assert event_sentence("SOMETHING_NEW", {"what_at": 1796200000}, TZ) == "Something new: what at 2026-12-02 11:26."


@pytest.mark.parametrize(
    ("value", "stale", "expected"),
    [(6.0, False, "ok"), (5.79, False, "low"), (6.21, False, "high"), (6.0, True, "stale"), (None, False, "none")],
)
def test_reading_state_against_the_target(value, stale, expected):
    assert reading_state(value, {"low": 5.8, "high": 6.2}, stale) == expected


def test_a_reading_without_a_target_has_no_colour():
    assert reading_state(22.0, None, False) == "none"


def test_manual_forms_are_bounded_and_explain_refusals():
    run = parse_manual({"channel": "a-drain", "action": "run", "duration_s": "45"})
    assert run[2:4] == ("run_pump", {"duration_s": 45})
    assert parse_manual({"channel": "ph_down", "node_uid": "nd-a-doser", "action": "dose", "ml": "1.5"})[1:4] == (
        "nd-a-doser", "dose", {"ml": 1.5})
    assert parse_manual({"channel": "a-fill", "action": "stop"})[2:4] == ("stop_pump", {})
    for bad, reason in (
        ({"channel": "a-drain", "action": "run", "duration_s": "601"}, "run time must be 1 to 600 s"),
        ({"channel": "a-drain", "action": "run", "duration_s": "nan"}, "run time must be a number"),
        ({"channel": "ph_down", "action": "dose", "ml": "0"}, "dose must be more than 0"),
        ({"channel": "", "action": "stop"}, "no pump chosen"),
        ({"channel": "a-drain", "action": "flood"}, "unknown action"),
    ):
        with pytest.raises(ManualError, match=reason):
            parse_manual(bad)
    locked = explain_refusal("locked:biz_pump_stuck_on")
    assert locked.startswith("the pump is locked by the safety loop (biz_pump_stuck_on)")
    assert explain_refusal("dry_run") == "the water level is below the dry-run limit [dry_run]"
    assert explain_refusal("something_else") == "something_else"


def test_water_buttons_valid_per_phase():
    assert water_actions_valid("NORMAL_RECIRC") == {"start": True, "abort": False, "ack": False}
    assert water_actions_valid("WATER_CHANGE_FILL") == {"start": False, "abort": True, "ack": False}
    assert water_actions_valid("FAILED") == {"start": False, "abort": False, "ack": True}
    assert water_actions_valid(None) == {"start": False, "abort": False, "ack": False}
    assert water_actions_valid("NORMAL_RECIRC", locked=True)["start"] is False


def test_chart_draws_the_target_band_and_keeps_it_in_view():
    rng = RANGES["1h"]
    points = tuple(ChartPoint(1000.0 + 60 * i, 6.9, 7.0, 6.95, 1) for i in range(60))
    series = ChartSeries("zone-a", Metric.PH, rng, 1000.0, 1000.0 + 3600, "telemetry_samples", points)
    svg = chart_svg(series, TZ, {"low": 5.8, "high": 6.2})
    assert '<rect class="target"' in svg and 'data-low="5.8" data-high="6.2"' in svg
    assert ">5.8<" in svg or ">5.5<" in svg  # the y axis reaches down to the band although the data sits at 7
    assert 'aria-label="pH (pH), last hour"' in svg
    assert '<rect class="target"' not in chart_svg(series, TZ)


def test_activity_strip_draws_runs_and_doses_on_the_time_axis():
    svg = activity_svg(
        [("a-recirc", 100.0, 900.0), ("a-drain", 2000.0, 2600.0), ("elsewhere", 0.0, 10.0)],
        [("ph_down", 1500.0, 1.2), ("ph_down", 99999.0, 1.0)],
        ["a-recirc", "a-drain"],
        0.0,
        3600.0,
        TZ,
    )
    assert svg.count('class="run"') == 2 and svg.count('class="dose"') == 1
    assert 'data-channel="a-drain"' in svg and 'data-ml="1.2"' in svg
