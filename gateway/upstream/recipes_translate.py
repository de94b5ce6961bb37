"""Recipes in the central format (sync/openapi.yaml) become recipes in the gateway's (automation/recipes.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from gateway.upstream.config_doc import UpstreamRecipe


class LocalIrrigation(TypedDict):
    """Irrigation times of day and how long each runs."""

    times: str
    duration_s: int


class LocalLights(TypedDict):
    """Lights on/off times of day."""

    on: str
    off: str


class LocalPhase(TypedDict, total=False):
    """A phase in the gateway's format: it starts on a day of the crop, not after the previous one's duration."""

    name: str
    start_day: int
    ph: dict[str, float]
    ec: dict[str, float]
    irrigation: LocalIrrigation
    lights: LocalLights


class LocalRecipe(TypedDict):
    """A recipe in the gateway's format."""

    name: str
    phases: list[LocalPhase]


def recipes_from_upstream(recipes: Sequence[UpstreamRecipe]) -> dict[str, LocalRecipe]:
    """The central recipe format → the gateway's, keyed by recipe uid."""
    out: dict[str, LocalRecipe] = {}
    for recipe in recipes:
        phases: list[LocalPhase] = []
        start_day = 0
        for phase in recipe.get("phases", []):
            local: LocalPhase = {"name": phase.get("name", f"phase-{len(phases)}"), "start_day": start_day}
            targets = phase.get("targets") or {}
            if "ph" in targets:
                local["ph"] = targets["ph"]
            if "ec" in targets:
                local["ec"] = targets["ec"]
            schedule = phase.get("irrigation_schedule")
            if schedule:
                local["irrigation"] = {"times": schedule, "duration_s": phase.get("irrigation_duration_s", 60)}
            lights = str(phase.get("light_schedule") or "")
            if lights.count(",") == 1:
                on, off = (t.strip() for t in lights.split(","))
                local["lights"] = {"on": on, "off": off}
            phases.append(local)
            start_day += int(phase.get("duration_days") or 0)
        uid = str(recipe["uid"])
        out[uid] = {"name": recipe.get("name", uid), "phases": phases}
    return out
