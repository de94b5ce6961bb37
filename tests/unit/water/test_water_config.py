"""water_cycle settings: the seed 003 §10.2 block, defaults, and errors that name the key."""

from __future__ import annotations

import copy
import json
import tomllib
from datetime import time
from typing import Any

import pytest

from gateway.water.config import (
    ConfigError,
    RecircWindow,
    WaterCycleConfig,
    WaterMode,
    water_cycle_from_dict,
    water_cycle_to_dict,
)

SEED_EXAMPLE: dict[str, Any] = {
    "mode": "RECIRCULATING",
    "recirc": {
        "enabled": True,
        "schedule": [{"from": "00:00", "to": "23:59", "duty_cycle": 0.5}],
        "max_recirc_off_minutes": 10,
    },
    "water_change": {
        "enabled": True,
        "interval_days": 7,
        "time_of_day": "09:00",
        "max_solution_age_days": 10,
        "trigger_by_ec_drift": True,
        "ec_drift_threshold": 30,
    },
}


def test_seed_example_parses_exactly() -> None:
    cfg = water_cycle_from_dict(SEED_EXAMPLE)
    assert cfg.mode is WaterMode.RECIRCULATING
    assert cfg.recirc.enabled is True
    assert cfg.recirc.schedule == (RecircWindow(0, 1440, 0.5),)
    assert cfg.recirc.max_recirc_off_minutes == 10
    wc = cfg.water_change
    assert (wc.enabled, wc.interval_days, wc.time_of_day) == (True, 7, time(9, 0))
    assert (wc.max_solution_age_days, wc.trigger_by_ec_drift, wc.ec_drift_threshold) == (10, True, 30)


def test_empty_block_gives_safe_defaults() -> None:
    cfg = water_cycle_from_dict({})
    assert cfg == WaterCycleConfig()
    assert cfg.water_change.enabled is False  # nobody drains a tank by default
    assert cfg.recirc.schedule == (RecircWindow(0, 1440, 1.0),)  # recirc always on


def _with(path: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(SEED_EXAMPLE)
    node: Any = d
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "recirc.schedule.0.duty_cycle",
            1.5,
            "water_cycle.recirc.schedule[0].duty_cycle: must be between 0 and 1",
        ),
        (
            "recirc.schedule.0.duty_cycle",
            "half",
            "water_cycle.recirc.schedule[0].duty_cycle: must be a number",
        ),
        ("recirc.schedule.0.from", "9:00", 'water_cycle.recirc.schedule[0].from: must be a time "HH:MM"'),
        ("recirc.schedule.0.to", "25:00", 'water_cycle.recirc.schedule[0].to: must be a time "HH:MM"'),
        ("recirc.schedule.0.to", "00:00", "water_cycle.recirc.schedule[0].to: must differ from 'from'"),
        ("recirc.enabled", "yes", "water_cycle.recirc.enabled: must be true or false"),
        ("recirc.max_recirc_off_minutes", 0, "water_cycle.recirc.max_recirc_off_minutes: must be > 0"),
        ("recirc.schedule", {"from": "00:00"}, "water_cycle.recirc.schedule: must be a list of windows"),
        ("recirc.schedule", [], "water_cycle.recirc.schedule: must contain at least one window"),
        ("recirc", [], "water_cycle.recirc: must be an object"),
        ("water_change.interval_days", -1, "water_cycle.water_change.interval_days: must be > 0"),
        ("water_change.interval_days", True, "water_cycle.water_change.interval_days: must be a number"),
        ("water_change.time_of_day", 900, 'water_cycle.water_change.time_of_day: must be a time "HH:MM"'),
        ("water_change.ec_drift_threshold", float("inf"), "water_cycle.water_change.ec_drift_threshold"),
        ("water_change.target_level", 4, "water_cycle.water_change.target_level: must be above empty_level"),
        ("water_change.empty_level", 101, "water_cycle.water_change.empty_level: must be between 0 and 100"),
        ("water_change.interval_dayz", 7, "water_cycle.water_change.interval_dayz: unknown key"),
        ("mode", "HYDRO", "water_cycle.mode: must be one of RECIRCULATING, MANUAL"),
    ],
)
def test_errors_name_the_offending_key(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        water_cycle_from_dict(_with(path, value))
    assert str(exc.value).startswith(message)
    assert exc.value.path == message.split(":")[0]


def test_window_missing_a_key_is_named() -> None:
    d = _with("recirc.schedule", [{"from": "06:00", "duty_cycle": 1}])
    with pytest.raises(ConfigError, match=r"^water_cycle\.recirc\.schedule\[0\]\.to: is required$"):
        water_cycle_from_dict(d)


def test_overlapping_windows_are_rejected() -> None:
    windows = [
        {"from": "22:00", "to": "06:00", "duty_cycle": 0.5},
        {"from": "05:00", "to": "12:00", "duty_cycle": 1},
    ]
    with pytest.raises(ConfigError, match=r"schedule\[1\]: overlaps an earlier window"):
        water_cycle_from_dict(_with("recirc.schedule", windows))


def test_window_crossing_midnight() -> None:
    cfg = water_cycle_from_dict(
        _with(
            "recirc.schedule",
            [
                {"from": "22:00", "to": "06:00", "duty_cycle": 0.25},
                {"from": "06:00", "to": "22:00", "duty_cycle": 1.0},
            ],
        )
    )
    night, day = cfg.recirc.schedule
    assert night == RecircWindow(22 * 60, 6 * 60, 0.25)
    assert night.contains(22 * 60) and night.contains(23 * 60 + 59.5) and night.contains(0) and night.contains(359.9)
    assert not night.contains(360) and not night.contains(12 * 60)
    assert night.minutes_into(1 * 60) == 180  # 3 h after 22:00
    assert day.contains(360) and not day.contains(22 * 60)


def test_2359_and_2400_mean_until_midnight() -> None:
    for to in ("23:59", "24:00"):
        cfg = water_cycle_from_dict(_with("recirc.schedule.0.to", to))
        (w,) = cfg.recirc.schedule
        assert w.end_min == 1440 and w.contains(23 * 60 + 59.9)


def test_toml_local_time_literals_are_accepted() -> None:
    raw = tomllib.loads(
        "[water_change]\ntime_of_day = 09:30:00\n[[recirc.schedule]]\nfrom = 06:00:00\nto = 22:00:00\nduty_cycle = 1"
    )
    cfg = water_cycle_from_dict(raw)
    assert cfg.water_change.time_of_day == time(9, 30)
    assert cfg.recirc.schedule == (RecircWindow(360, 1320, 1.0),)
    with pytest.raises(ConfigError, match="time_of_day"):
        water_cycle_from_dict({"water_change": {"time_of_day": time(9, 30, 15)}})


def test_manual_mode_and_disabled_recirc_need_no_schedule() -> None:
    cfg = water_cycle_from_dict({"mode": "MANUAL", "recirc": {"enabled": False, "schedule": []}})
    assert cfg.mode is WaterMode.MANUAL and cfg.recirc.schedule == ()


def test_round_trip_through_json() -> None:
    d = _with(
        "recirc.schedule",
        [
            {"from": "00:00", "to": "06:00", "duty_cycle": 0.25},
            {"from": "06:00", "to": "00:00", "duty_cycle": 1},
        ],
    )
    cfg = water_cycle_from_dict(d)
    again = water_cycle_from_dict(json.loads(json.dumps(water_cycle_to_dict(cfg))))
    assert again == cfg


def test_config_error_is_a_value_error_with_path_and_message() -> None:
    err = ConfigError("water_cycle.mode", "must be one of RECIRCULATING, MANUAL")
    assert isinstance(err, ValueError)
    assert (err.path, err.message) == ("water_cycle.mode", "must be one of RECIRCULATING, MANUAL")
