"""Recipes (seed 004 §3.3–3.4): phases with pH/EC targets, irrigation and light times, day/night modes. Pure.

A recipe as it appears in the config file (``[recipes.<name>]``) or in the synced config::

    {"name": "Lettuce NFT",
     "phases": [
       {"name": "seedling", "start_day": 0,
        "ph": {"min": 5.8, "max": 6.2}, "ec": {"min": 1.0, "max": 1.4},
        "irrigation": {"times": "08:00,12:00,18:00", "duration_s": 120},
        "lights": {"on": "06:00", "off": "22:00"},
        "night": {"ph": {"min": 5.9, "max": 6.3}}},
       {"name": "growth", "start_day": 14, "ph": {"min": 5.8, "max": 6.2}, "ec": {"min": 1.4, "max": 1.8},
        "irrigation": [{"at": "08:00", "duration_s": 90}, {"at": "17:30", "duration_s": 60}]}]}

The phase of a zone is chosen by the number of local days since the zone's ``recipe_start`` (day 0 is
the start date). Day mode is the ``day`` window (``{"from": "06:00", "to": "22:00"}``), else the lights
window; without either it is always day. At night the ``night`` targets replace the day ones key by key.
Times are greenhouse local time ("HH:MM"); a window with from > to crosses midnight.
Unknown keys are rejected so a typo never falls back to a default silently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, time

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
PH_LIMITS = (0.0, 14.0)
EC_LIMITS = (0.0, 20.0)
MAX_IRRIGATION_S = 4 * 3600.0


class RecipeError(ValueError):
    """A recipe or its assignment is invalid; ``path`` names the key, e.g. ``recipes.lettuce.phases.1.ph.min``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class Range:
    """A target range; dosing aims at its middle."""

    low: float
    high: float

    @property
    def mid(self) -> float:
        """The set point."""
        return (self.low + self.high) / 2

    def contains(self, value: float) -> bool:
        """True when ``low <= value <= high``."""
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Targets:
    """pH and EC ranges in force at one moment (None: not controlled)."""

    ph: Range | None = None
    ec: Range | None = None


@dataclass(frozen=True)
class Window:
    """A daily local-time window ``[start, end)``; start > end crosses midnight."""

    start: time
    end: time

    def contains(self, t: time) -> bool:
        """True when ``t`` falls inside the window."""
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


@dataclass(frozen=True)
class Irrigation:
    """One irrigation run at a local time of day."""

    at: time
    duration_s: float


@dataclass(frozen=True)
class Phase:
    """One growth phase."""

    name: str
    start_day: int
    day: Targets
    night: Targets
    irrigation: tuple[Irrigation, ...] = ()
    lights: Window | None = None
    day_window: Window | None = None

    def is_day(self, t: time) -> bool:
        """Day mode at local time ``t``."""
        window = self.day_window or self.lights
        return window is None or window.contains(t)

    def targets_at(self, t: time) -> Targets:
        """The targets in force at local time ``t`` (night overrides at night)."""
        return self.day if self.is_day(t) else self.night

    def lights_on_at(self, t: time) -> bool | None:
        """Whether the lights should be on at ``t`` (None: the phase does not schedule lights)."""
        return None if self.lights is None else self.lights.contains(t)


@dataclass(frozen=True)
class Recipe:
    """A named sequence of phases, sorted by start day (the first starts on day 0)."""

    name: str
    phases: tuple[Phase, ...]
    title: str = ""

    def phase_for_day(self, day_index: int) -> Phase | None:
        """The phase on day ``day_index`` since the start (None before the start)."""
        if day_index < 0:
            return None
        current = None
        for phase in self.phases:
            if phase.start_day <= day_index:
                current = phase
        return current


@dataclass(frozen=True)
class Assignment:
    """A recipe assigned to a zone from a local start date."""

    recipe: Recipe
    start: date

    def day_index(self, d: date) -> int:
        """Days since the start (0 on the start date)."""
        return (d - self.start).days

    def phase_on(self, d: date) -> Phase | None:
        """The phase on local date ``d``."""
        return self.recipe.phase_for_day(self.day_index(d))

    def targets_at(self, d: date, t: time) -> Targets:
        """Targets on local date ``d`` at local time ``t`` (empty before the start)."""
        phase = self.phase_on(d)
        return Targets() if phase is None else phase.targets_at(t)


@dataclass
class _Reader:
    """Reads one mapping and reports errors with its key path."""

    value: object
    path: str
    allowed: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not isinstance(self.value, Mapping):
            raise RecipeError(self.path, f"expected a table/object, got {type(self.value).__name__}")
        unknown = sorted(set(self.value) - self.allowed)
        if unknown:
            raise RecipeError(f"{self.path}.{unknown[0]}", f"unknown key; known keys: {sorted(self.allowed)}")

    def p(self, key: str) -> str:
        return f"{self.path}.{key}"

    def get(self, key: str) -> object:
        assert isinstance(self.value, Mapping)  # checked in __post_init__
        return self.value.get(key)


def _number(value: object, path: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecipeError(path, f"expected a number, got {value!r}")
    if not lo <= float(value) <= hi:
        raise RecipeError(path, f"{value} is outside {lo}..{hi}")
    return float(value)


def parse_hhmm(value: object, path: str) -> time:
    """Parse "HH:MM" (24 h) or raise RecipeError naming ``path``."""
    if not isinstance(value, str) or not _HHMM.match(value.strip()):
        raise RecipeError(path, f"expected a time as 'HH:MM', got {value!r}")
    hh, mm = value.strip().split(":")
    return time(int(hh), int(mm))


def _range(value: object, path: str, limits: tuple[float, float]) -> Range:
    r = _Reader(value, path, frozenset({"min", "max"}))
    if r.get("min") is None or r.get("max") is None:
        raise RecipeError(path, "needs both 'min' and 'max'")
    low = _number(r.get("min"), r.p("min"), *limits)
    high = _number(r.get("max"), r.p("max"), *limits)
    if low >= high:
        raise RecipeError(r.p("max"), f"must be greater than min ({low})")
    return Range(low, high)


def _targets(r: _Reader) -> Targets:
    ph = None if r.get("ph") is None else _range(r.get("ph"), r.p("ph"), PH_LIMITS)
    ec = None if r.get("ec") is None else _range(r.get("ec"), r.p("ec"), EC_LIMITS)
    return Targets(ph, ec)


def _window(value: object, path: str, start_key: str, end_key: str) -> Window:
    r = _Reader(value, path, frozenset({start_key, end_key}))
    for key in (start_key, end_key):
        if r.get(key) is None:
            raise RecipeError(r.p(key), "is required")
    start, end = parse_hhmm(r.get(start_key), r.p(start_key)), parse_hhmm(r.get(end_key), r.p(end_key))
    if start == end:
        raise RecipeError(r.p(end_key), f"must differ from {start_key}")
    return Window(start, end)


def _times(value: object, path: str) -> list[tuple[str, time]]:
    """A "08:00" / "12:00,18:00" string or a list of such strings → [(path, time)]."""
    if isinstance(value, str):
        parts = [(path, s) for s in value.split(",")]
    elif isinstance(value, list):
        parts = [(f"{path}.{i}", s) for i, s in enumerate(value)]
    else:
        raise RecipeError(path, f"expected 'HH:MM[,HH:MM…]' or a list of times, got {value!r}")
    if not parts:
        raise RecipeError(path, "is empty")
    return [(p, parse_hhmm(s.strip() if isinstance(s, str) else s, p)) for p, s in parts]


def _irrigation(value: object, path: str) -> tuple[Irrigation, ...]:
    runs: list[tuple[str, Irrigation]] = []
    if isinstance(value, Mapping):
        r = _Reader(value, path, frozenset({"times", "duration_s"}))
        if r.get("times") is None or r.get("duration_s") is None:
            raise RecipeError(path, "needs 'times' and 'duration_s'")
        duration = _number(r.get("duration_s"), r.p("duration_s"), 1.0, MAX_IRRIGATION_S)
        runs = [(p, Irrigation(t, duration)) for p, t in _times(r.get("times"), r.p("times"))]
    elif isinstance(value, list):
        for i, item in enumerate(value):
            r = _Reader(item, f"{path}.{i}", frozenset({"at", "duration_s"}))
            if r.get("at") is None or r.get("duration_s") is None:
                raise RecipeError(r.path, "needs 'at' and 'duration_s'")
            at = parse_hhmm(r.get("at"), r.p("at"))
            runs.append((r.p("at"), Irrigation(at, _number(r.get("duration_s"), r.p("duration_s"), 1.0,
                                                            MAX_IRRIGATION_S))))
    else:
        raise RecipeError(path, "expected {times, duration_s} or a list of {at, duration_s}")
    seen: set[time] = set()
    for p, run in runs:
        if run.at in seen:
            raise RecipeError(p, f"duplicate irrigation time {run.at:%H:%M}")
        seen.add(run.at)
    return tuple(sorted((run for _, run in runs), key=lambda x: x.at))


_PHASE_KEYS = frozenset({"name", "start_day", "ph", "ec", "irrigation", "lights", "day", "night"})


def _phase(value: object, path: str) -> Phase:
    r = _Reader(value, path, _PHASE_KEYS)
    start_day = r.get("start_day")
    if isinstance(start_day, bool) or not isinstance(start_day, int) or start_day < 0:
        raise RecipeError(r.p("start_day"), f"expected a whole number of days >= 0, got {start_day!r}")
    name = r.get("name") or f"phase-{start_day}"
    if not isinstance(name, str):
        raise RecipeError(r.p("name"), "expected a string")
    day = _targets(r)
    night = day
    if r.get("night") is not None:
        nr = _Reader(r.get("night"), r.p("night"), frozenset({"ph", "ec"}))
        over = _targets(nr)
        night = Targets(over.ph or day.ph, over.ec or day.ec)
    return Phase(
        name=name,
        start_day=start_day,
        day=day,
        night=night,
        irrigation=() if r.get("irrigation") is None else _irrigation(r.get("irrigation"), r.p("irrigation")),
        lights=None if r.get("lights") is None else _window(r.get("lights"), r.p("lights"), "on", "off"),
        day_window=None if r.get("day") is None else _window(r.get("day"), r.p("day"), "from", "to"),
    )


def recipe_from_dict(name: str, value: object, path: str | None = None) -> Recipe:
    """Validate one recipe mapping; errors name the key path (``recipes.<name>.phases.1.ph.min``)."""
    path = path or f"recipes.{name}"
    r = _Reader(value, path, frozenset({"name", "phases"}))
    phases_raw = r.get("phases")
    if not isinstance(phases_raw, list) or not phases_raw:
        raise RecipeError(r.p("phases"), "needs at least one phase")
    phases = [_phase(p, f"{r.p('phases')}.{i}") for i, p in enumerate(phases_raw)]
    if phases[0].start_day != 0:
        raise RecipeError(f"{r.p('phases')}.0.start_day", "the first phase must start on day 0")
    for i in range(1, len(phases)):
        if phases[i].start_day <= phases[i - 1].start_day:
            raise RecipeError(f"{r.p('phases')}.{i}.start_day",
                              f"must be after the previous phase's start_day ({phases[i - 1].start_day})")
    title = r.get("name") or name
    if not isinstance(title, str):
        raise RecipeError(r.p("name"), "expected a string")
    return Recipe(name=name, phases=tuple(phases), title=title)


def recipes_from_mapping(value: Mapping[str, object], path: str = "recipes") -> dict[str, Recipe]:
    """Validate every recipe of ``Settings.recipes`` (name → recipe mapping)."""
    return {name: recipe_from_dict(name, body, f"{path}.{name}") for name, body in value.items()}


def parse_start(value: object, path: str) -> date:
    """A recipe start date 'YYYY-MM-DD'."""
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise RecipeError(path, f"expected a date 'YYYY-MM-DD', got {value!r}") from None


def assignment_for(
    recipe_name: str | None, start: object, recipes: Mapping[str, Recipe], path: str
) -> Assignment | None:
    """The zone's recipe assignment (``path`` is the zone, e.g. ``zones.0``); None when it has no recipe."""
    if recipe_name is None:
        return None
    if recipe_name not in recipes:
        raise RecipeError(f"{path}.recipe", f"unknown recipe {recipe_name!r}; known: {sorted(recipes)}")
    if start is None:
        raise RecipeError(f"{path}.recipe_start", "is required when a recipe is assigned")
    return Assignment(recipes[recipe_name], parse_start(start, f"{path}.recipe_start"))


def recipe_problems(zones: Sequence[tuple[str | None, object]], recipes: Mapping[str, object]) -> list[str]:
    """Every problem with the recipes and the zones' (recipe, recipe_start), one line each (for settings)."""
    problems: list[str] = []
    parsed: dict[str, Recipe] = {}
    for name, body in recipes.items():
        try:
            parsed[name] = recipe_from_dict(name, body)
        except RecipeError as exc:
            problems.append(str(exc))
    for i, (recipe_name, start) in enumerate(zones):
        if recipe_name is not None and recipe_name in recipes and recipe_name not in parsed:
            continue  # already reported
        try:
            assignment_for(recipe_name, start, parsed, f"zones.{i}")
        except RecipeError as exc:
            problems.append(str(exc))
    return problems
