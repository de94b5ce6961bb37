"""Recipes: validation with key paths, phase by days since the start, day/night targets, automation settings."""

from __future__ import annotations

from datetime import date, time
from typing import Any

import pytest

from gateway.automation.config import AutomationConfigError, automation_config_from_dict
from gateway.automation.recipes import (
    Irrigation,
    Range,
    RecipeError,
    Window,
    assignment_for,
    recipe_from_dict,
    recipe_problems,
    recipes_from_mapping,
)
from gateway.automation.zones import zone_plans
from gateway.settings import ZoneConfig

LETTUCE: dict[str, Any] = {
    "name": "Lettuce NFT",
    "phases": [
        {"name": "seedling", "start_day": 0, "ph": {"min": 5.8, "max": 6.2}, "ec": {"min": 1.0, "max": 1.4},
         "irrigation": {"times": "12:00, 08:00,18:00", "duration_s": 120},
         "lights": {"on": "06:00", "off": "22:00"}, "night": {"ec": {"min": 0.8, "max": 1.2}}},
        {"name": "growth", "start_day": 14, "ph": {"min": 5.6, "max": 6.0}, "ec": {"min": 1.4, "max": 1.8},
         "irrigation": [{"at": "17:30", "duration_s": 60}, {"at": "08:00", "duration_s": 90}],
         "day": {"from": "20:00", "to": "04:00"}},
    ],
}


def test_recipe_parses_times_ranges_and_windows() -> None:
    r = recipe_from_dict("lettuce", LETTUCE)
    seedling, growth = r.phases
    assert r.title == "Lettuce NFT"
    assert seedling.irrigation == tuple(Irrigation(time(h), 120.0) for h in (8, 12, 18))
    assert growth.irrigation == (Irrigation(time(8), 90.0), Irrigation(time(17, 30), 60.0))
    assert seedling.day.ph == Range(5.8, 6.2) and seedling.lights == Window(time(6), time(22))
    assert seedling.day.ph.mid == pytest.approx(6.0)


def test_phase_follows_days_since_the_zone_start() -> None:
    a = assignment_for("lettuce", "2026-03-01", recipes_from_mapping({"lettuce": LETTUCE}), "zones.0")
    assert a is not None
    assert a.phase_on(date(2026, 2, 28)) is None  # not started yet
    assert a.phase_on(date(2026, 3, 1)).name == "seedling"  # type: ignore[union-attr]
    assert a.phase_on(date(2026, 3, 14)).name == "seedling"  # type: ignore[union-attr]
    assert a.phase_on(date(2026, 3, 15)).name == "growth"  # type: ignore[union-attr]
    assert a.phase_on(date(2027, 1, 1)).name == "growth"  # type: ignore[union-attr]


def test_night_targets_replace_day_targets_key_by_key() -> None:
    a = assignment_for("lettuce", "2026-03-01", recipes_from_mapping({"lettuce": LETTUCE}), "zones.0")
    assert a is not None
    day, night = a.targets_at(date(2026, 3, 2), time(12)), a.targets_at(date(2026, 3, 2), time(23))
    assert day.ec == Range(1.0, 1.4) and night.ec == Range(0.8, 1.2)
    assert day.ph == night.ph == Range(5.8, 6.2)
    # The growth phase's day window crosses midnight.
    assert a.phase_on(date(2026, 3, 20)).is_day(time(2))  # type: ignore[union-attr]
    assert not a.phase_on(date(2026, 3, 20)).is_day(time(12))  # type: ignore[union-attr]
    assert a.targets_at(date(2026, 2, 1), time(12)).ph is None  # before the start: nothing to control


@pytest.mark.parametrize(
    ("mutate", "path", "words"),
    [
        (lambda r: r["phases"][1]["ph"].update(min=6.5), "recipes.lettuce.phases.1.ph.max", "greater than min"),
        (lambda r: r["phases"][0]["ph"].update(max=15), "recipes.lettuce.phases.0.ph.max", "outside"),
        (lambda r: r["phases"][0].update(irrigation={"times": "8:00", "duration_s": 60}),
         "recipes.lettuce.phases.0.irrigation.times", "HH:MM"),
        (lambda r: r["phases"][0].update(irrigation={"times": "08:00,08:00", "duration_s": 60}),
         "recipes.lettuce.phases.0.irrigation.times", "duplicate"),
        (lambda r: r["phases"][1]["irrigation"][0].update(duration_s=0),
         "recipes.lettuce.phases.1.irrigation.0.duration_s", "outside"),
        (lambda r: r["phases"][0].update(lights={"on": "06:00", "off": "06:00"}),
         "recipes.lettuce.phases.0.lights.off", "differ"),
        (lambda r: r["phases"][0].update(ph_target=6), "recipes.lettuce.phases.0.ph_target", "unknown key"),
        (lambda r: r["phases"][1].update(start_day=0), "recipes.lettuce.phases.1.start_day", "after the previous"),
        (lambda r: r["phases"][0].update(start_day=3), "recipes.lettuce.phases.0.start_day", "day 0"),
        (lambda r: r.update(phases=[]), "recipes.lettuce.phases", "at least one"),
        (lambda r: r["phases"][0]["night"].update(ec="high"), "recipes.lettuce.phases.0.night.ec", "table"),
    ],
)
def test_invalid_recipes_name_the_key_path(mutate: Any, path: str, words: str) -> None:
    import copy

    body = copy.deepcopy(LETTUCE)
    mutate(body)
    with pytest.raises(RecipeError) as err:
        recipe_from_dict("lettuce", body)
    assert err.value.path == path and words in err.value.message


def test_zone_assignment_errors_name_the_zone_key() -> None:
    zones = [ZoneConfig(uid="a", recipe="lettuce", recipe_start="2026-03-01"),
             ZoneConfig(uid="b", recipe="tomato", recipe_start="2026-03-01"),
             ZoneConfig(uid="c", recipe="lettuce"),
             ZoneConfig(uid="d", recipe="lettuce", recipe_start="1 March")]
    problems = recipe_problems([(z.recipe, z.recipe_start) for z in zones], {"lettuce": LETTUCE})
    assert [p.split(":")[0] for p in problems] == ["zones.1.recipe", "zones.2.recipe_start", "zones.3.recipe_start"]
    assert "unknown recipe 'tomato'" in problems[0]
    with pytest.raises(RecipeError, match=r"zones\.1\.recipe"):
        zone_plans(zones[:2], recipes_from_mapping({"lettuce": LETTUCE}))
    plans = zone_plans([zones[0], ZoneConfig(uid="e")], recipes_from_mapping({"lettuce": LETTUCE}))
    assert plans[0].assignment is not None and plans[1].assignment is None


def test_automation_settings_defaults_overrides_and_errors() -> None:
    cfg = automation_config_from_dict({"irrigation_grace_s": 600, "dosing": {"ph": {"hourly_cap_ml": 4}}})
    assert cfg.irrigation_grace_s == 600 and cfg.dosing.ph.hourly_cap_ml == 4.0
    assert cfg.dosing.ph.daily_cap_ml == 60.0 and cfg.dosing.mixing_delay_s == 300.0
    for bad, path in (({"dosing": {"ph": {"hourly_cap": 4}}}, "automation.dosing.ph.hourly_cap"),
                      ({"aggregate_interval_s": -1}, "automation.aggregate_interval_s"),
                      ({"dosing": {"gain": 2}}, "automation.dosing.gain"),
                      ({"dosing": {"max_ineffective": 2.5}}, "automation.dosing.max_ineffective"),
                      ({"dosing": {"cooldown_s": 10}}, "automation.dosing.cooldown_s")):
        with pytest.raises(AutomationConfigError) as err:
            automation_config_from_dict(bad)
        assert err.value.path == path
