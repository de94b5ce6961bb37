"""Zone ``water_cycle`` settings exactly as seed 003 §10.2, plus the limits the water machine needs.

```json
"water_cycle": {
  "mode": "RECIRCULATING",
  "recirc": {"enabled": true, "schedule": [{"from": "00:00", "to": "23:59", "duty_cycle": 0.5}],
             "max_recirc_off_minutes": 10, "period_minutes": 20, "min_on_minutes": 2},
  "water_change": {"enabled": true, "interval_days": 7, "time_of_day": "09:00", "max_solution_age_days": 10,
                   "trigger_by_ec_drift": true, "ec_drift_threshold": 30, "ec_drift_confirm_minutes": 30,
                   "empty_level": 5, "target_level": 90, "drain_timeout_min": 30, "fill_timeout_min": 30,
                   "stabilize_minutes": 15, "stale_after_s": 60}
}
```

Keys after ``max_recirc_off_minutes`` / ``ec_drift_threshold`` are our additions with defaults. Unknown
keys are rejected (a typo must not silently fall back to a default). Schedule windows are
``from <= t < to`` in greenhouse local time; ``from > to`` crosses midnight ("22:00"→"06:00"), and a
``to`` of "23:59" or "24:00" means "until midnight" (the seed writes a whole day as 00:00-23:59).
Mode ``MANUAL`` (our addition) means automation leaves the water alone: no recirc control, no
automatic water change (an operator may still start one).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from enum import StrEnum

DAY_MINUTES = 1440
DEFAULT_MAX_RECIRC_OFF_MINUTES = 10.0
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class ConfigError(ValueError):
    """A water_cycle setting is invalid; ``path`` names the key, e.g. ``water_cycle.recirc.enabled``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class WaterMode(StrEnum):
    """How the zone's water is managed."""

    RECIRCULATING = "RECIRCULATING"
    MANUAL = "MANUAL"


@dataclass(frozen=True)
class RecircWindow:
    """A local-time window ``[start_min, end_min)`` (minutes of day) with its duty cycle."""

    start_min: int
    end_min: int  # 1..1440; below start_min means the window crosses midnight
    duty_cycle: float

    def contains(self, minute_of_day: float) -> bool:
        """Whether the local minute of day (fractional) falls inside the window."""
        if self.start_min < self.end_min:
            return self.start_min <= minute_of_day < self.end_min
        return minute_of_day >= self.start_min or minute_of_day < self.end_min

    def minutes_into(self, minute_of_day: float) -> float:
        """Minutes since the window opened (the duty cycle's phase anchor)."""
        return (minute_of_day - self.start_min) % DAY_MINUTES

    def covered_minutes(self) -> set[int]:
        """Whole minutes of day inside the window (for overlap checks)."""
        return {m for m in range(DAY_MINUTES) if self.contains(m)}


@dataclass(frozen=True)
class RecircConfig:
    """Recirculation of the NC main pump (seed 003 §12)."""

    enabled: bool = True
    schedule: tuple[RecircWindow, ...] = (RecircWindow(0, DAY_MINUTES, 1.0),)
    # None: not set. The water machine then allows 10 min OFF (``max_off_minutes``), and the safety loop keeps
    # its own ``safety.max_nc_off_s`` for this zone (``gateway/safety/channels.py``).
    max_recirc_off_minutes: float | None = None
    period_minutes: float = 20.0  # length of one duty-cycle period (ON share first, then OFF)
    min_on_minutes: float = 2.0  # shortest ON after any OFF, so the relay cannot flap

    @property
    def max_off_minutes(self) -> float:
        """The longest OFF stretch the recirculation allows (10 min unless the zone says otherwise)."""
        return DEFAULT_MAX_RECIRC_OFF_MINUTES if self.max_recirc_off_minutes is None else self.max_recirc_off_minutes


@dataclass(frozen=True)
class WaterChangeConfig:
    """Scheduled solution change (seed 003 §13); levels in % of the tank."""

    enabled: bool = False  # draining a tank must be opted into
    interval_days: float = 7.0
    time_of_day: time = time(9, 0)
    max_solution_age_days: float = 10.0
    trigger_by_ec_drift: bool = False
    ec_drift_threshold: float = 30.0  # percent of the EC measured when the solution was made
    ec_drift_confirm_minutes: float = 30.0  # drift must persist this long (one noisy reading is not enough)
    empty_level: float = 5.0
    target_level: float = 90.0
    drain_timeout_min: float = 30.0
    fill_timeout_min: float = 30.0
    stabilize_minutes: float = 15.0
    stale_after_s: float = 60.0  # a level/EC reading older than this is unavailable


@dataclass(frozen=True)
class WaterCycleConfig:
    """The whole ``water_cycle`` block of a zone."""

    mode: WaterMode = WaterMode.RECIRCULATING
    recirc: RecircConfig = RecircConfig()
    water_change: WaterChangeConfig = WaterChangeConfig()


class _Section:
    """Typed access to one mapping of the settings with key paths in every error."""

    def __init__(self, value: object, path: str, allowed: set[str]) -> None:
        if not isinstance(value, Mapping):
            raise ConfigError(path, "must be an object")
        for key in value:
            if key not in allowed:
                raise ConfigError(f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
        self.d: Mapping[str, object] = value
        self.path = path

    def p(self, key: str) -> str:
        return f"{self.path}.{key}"

    def boolean(self, key: str, default: bool) -> bool:
        v = self.d.get(key, default)
        if not isinstance(v, bool):
            raise ConfigError(self.p(key), "must be true or false")
        return v

    def number(self, key: str, default: float, *, lo: float, hi: float = math.inf, lo_open: bool = True) -> float:
        return _number(self.d.get(key, default), self.p(key), lo=lo, hi=hi, lo_open=lo_open)

    def hhmm(self, key: str, default: str) -> time:
        h, m = _hhmm(self.d.get(key, default), self.p(key), allow_24=False)
        return time(h, m)


def _number(v: object, path: str, *, lo: float, hi: float = math.inf, lo_open: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(path, "must be a number")
    too_low = v <= lo if lo_open else v < lo
    if too_low or v > hi:
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise ConfigError(path, f"must be {low}" if hi == math.inf else f"must be between {lo:g} and {hi:g}")
    return float(v)


def _hhmm(v: object, path: str, *, allow_24: bool) -> tuple[int, int]:
    if isinstance(v, time) and v.second == 0 and v.microsecond == 0 and v.tzinfo is None:
        return v.hour, v.minute  # a TOML local-time literal (time_of_day = 09:00:00)
    if isinstance(v, str) and allow_24 and v == "24:00":
        return 24, 0
    m = _HHMM.match(v) if isinstance(v, str) else None
    if m is None:
        raise ConfigError(path, 'must be a time "HH:MM"')
    return int(m.group(1)), int(m.group(2))


def _window(value: object, path: str) -> RecircWindow:
    s = _Section(value, path, {"from", "to", "duty_cycle"})
    for key in ("from", "to", "duty_cycle"):
        if key not in s.d:
            raise ConfigError(s.p(key), "is required")
    fh, fm = _hhmm(s.d["from"], s.p("from"), allow_24=False)
    th, tm = _hhmm(s.d["to"], s.p("to"), allow_24=True)
    start = fh * 60 + fm
    end = th * 60 + tm
    if end in (DAY_MINUTES - 1, DAY_MINUTES):  # "23:59"/"24:00": until midnight
        end = DAY_MINUTES
    if end == start:
        raise ConfigError(s.p("to"), "must differ from 'from'")
    duty = _number(s.d["duty_cycle"], s.p("duty_cycle"), lo=0.0, hi=1.0, lo_open=False)
    return RecircWindow(start, end, duty)


def _recirc(value: object, path: str) -> RecircConfig:
    allowed = {"enabled", "schedule", "max_recirc_off_minutes", "period_minutes", "min_on_minutes"}
    s = _Section(value, path, allowed)
    enabled = s.boolean("enabled", True)
    raw = s.d.get("schedule")
    schedule = RecircConfig.schedule
    if raw is not None:
        if not isinstance(raw, list):
            raise ConfigError(s.p("schedule"), "must be a list of windows")
        schedule = tuple(_window(w, f"{s.p('schedule')}[{i}]") for i, w in enumerate(raw))
        if enabled and not schedule:
            raise ConfigError(s.p("schedule"), "must contain at least one window when recirc is enabled")
        seen: set[int] = set()
        for i, w in enumerate(schedule):
            minutes = w.covered_minutes()
            if minutes & seen:
                raise ConfigError(f"{s.p('schedule')}[{i}]", "overlaps an earlier window")
            seen |= minutes
    return RecircConfig(
        enabled=enabled,
        schedule=schedule,
        max_recirc_off_minutes=(
            None if "max_recirc_off_minutes" not in s.d else s.number("max_recirc_off_minutes", 0.0, lo=0.0)
        ),
        period_minutes=s.number("period_minutes", 20.0, lo=0.0),
        min_on_minutes=s.number("min_on_minutes", 2.0, lo=0.0),
    )


def _water_change(value: object, path: str) -> WaterChangeConfig:
    allowed = {
        "enabled", "interval_days", "time_of_day", "max_solution_age_days", "trigger_by_ec_drift",
        "ec_drift_threshold", "ec_drift_confirm_minutes", "empty_level", "target_level",
        "drain_timeout_min", "fill_timeout_min", "stabilize_minutes", "stale_after_s",
    }  # fmt: skip
    s = _Section(value, path, allowed)
    empty = s.number("empty_level", 5.0, lo=0.0, hi=100.0, lo_open=False)
    target = s.number("target_level", 90.0, lo=0.0, hi=100.0, lo_open=False)
    if target <= empty:
        raise ConfigError(s.p("target_level"), "must be above empty_level")
    return WaterChangeConfig(
        enabled=s.boolean("enabled", False),
        interval_days=s.number("interval_days", 7.0, lo=0.0),
        time_of_day=s.hhmm("time_of_day", "09:00"),
        max_solution_age_days=s.number("max_solution_age_days", 10.0, lo=0.0),
        trigger_by_ec_drift=s.boolean("trigger_by_ec_drift", False),
        ec_drift_threshold=s.number("ec_drift_threshold", 30.0, lo=0.0),
        ec_drift_confirm_minutes=s.number("ec_drift_confirm_minutes", 30.0, lo=0.0, lo_open=False),
        empty_level=empty,
        target_level=target,
        drain_timeout_min=s.number("drain_timeout_min", 30.0, lo=0.0),
        fill_timeout_min=s.number("fill_timeout_min", 30.0, lo=0.0),
        stabilize_minutes=s.number("stabilize_minutes", 15.0, lo=0.0, lo_open=False),
        stale_after_s=s.number("stale_after_s", 60.0, lo=0.0),
    )


def water_cycle_from_dict(d: Mapping[str, object]) -> WaterCycleConfig:
    """Parse and validate the inner ``water_cycle`` object; raise ``ConfigError`` naming the bad key."""
    s = _Section(d, "water_cycle", {"mode", "recirc", "water_change"})
    mode_raw = s.d.get("mode", WaterMode.RECIRCULATING.value)
    if not isinstance(mode_raw, str) or mode_raw not in {m.value for m in WaterMode}:
        raise ConfigError(s.p("mode"), f"must be one of {', '.join(m.value for m in WaterMode)}")
    mode = WaterMode(mode_raw)
    return WaterCycleConfig(
        mode=mode,
        recirc=_recirc(s.d.get("recirc", {}), s.p("recirc")),
        water_change=_water_change(s.d.get("water_change", {}), s.p("water_change")),
    )


def _fmt_minutes(m: int) -> str:
    return f"{m // 60:02d}:{m % 60:02d}"


def water_cycle_to_dict(cfg: WaterCycleConfig) -> dict[str, object]:
    """JSON-ready form that ``water_cycle_from_dict`` reads back to an equal config."""
    rc, wc = cfg.recirc, cfg.water_change
    return {
        "mode": cfg.mode.value,
        "recirc": {
            "enabled": rc.enabled,
            "schedule": [
                {"from": _fmt_minutes(w.start_min), "to": _fmt_minutes(w.end_min), "duty_cycle": w.duty_cycle}
                for w in rc.schedule
            ],
            **({} if rc.max_recirc_off_minutes is None else {"max_recirc_off_minutes": rc.max_recirc_off_minutes}),
            "period_minutes": rc.period_minutes,
            "min_on_minutes": rc.min_on_minutes,
        },
        "water_change": {
            "enabled": wc.enabled,
            "interval_days": wc.interval_days,
            "time_of_day": wc.time_of_day.strftime("%H:%M"),
            "max_solution_age_days": wc.max_solution_age_days,
            "trigger_by_ec_drift": wc.trigger_by_ec_drift,
            "ec_drift_threshold": wc.ec_drift_threshold,
            "ec_drift_confirm_minutes": wc.ec_drift_confirm_minutes,
            "empty_level": wc.empty_level,
            "target_level": wc.target_level,
            "drain_timeout_min": wc.drain_timeout_min,
            "fill_timeout_min": wc.fill_timeout_min,
            "stabilize_minutes": wc.stabilize_minutes,
            "stale_after_s": wc.stale_after_s,
        },
    }
