"""What a zone is meant to do: recipe phase (day N of M), targets in force, next irrigation, water change, dose.

Read-only views over the automation and water services for the pages; every time is wall-clock seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from gateway.automation.dosing import Param
from gateway.automation.recipes import Assignment, Range
from gateway.telemetry_metrics import Metric
from gateway.water.cycle import CHANGE_PHASES

if TYPE_CHECKING:
    from gateway.web.context import WebServices

DAY_S = 86400.0


def _assignment(g: WebServices, zone_uid: str) -> Assignment | None:
    for plan in g.automation.plans:
        if plan.uid == zone_uid:
            return plan.assignment
    return None


def _tz(g: WebServices) -> ZoneInfo:
    return ZoneInfo(g.settings.gateway.timezone)


def _range(r: Range | None) -> dict[str, float] | None:
    return None if r is None else {"low": r.low, "high": r.high}


def targets_now(g: WebServices, zone_uid: str, now: float) -> dict[str, dict[str, float]]:
    """Target range per metric in force now: pH and EC from the recipe phase, water level from the safety floor."""
    out: dict[str, dict[str, float]] = {}
    a = _assignment(g, zone_uid)
    if a is not None:
        local = datetime.fromtimestamp(now, _tz(g))
        t = a.targets_at(local.date(), local.time())
        for metric, r in ((Metric.PH, t.ph), (Metric.EC, t.ec)):
            rng = _range(r)
            if rng is not None:
                out[metric.value] = rng
    # Below this level the interlock refuses the pumps: anything under it is out of range.
    out[Metric.WATER_LEVEL.value] = {"low": g.settings.safety.min_water_level, "high": 100.0}
    return out


def reading_state(value: float | None, target: dict[str, float] | None, stale: bool) -> str:
    """'stale', 'low', 'high', 'ok' (inside the target) or 'none' (no target for this metric)."""
    if stale:
        return "stale"
    if value is None or target is None:
        return "none"
    if value < target["low"]:
        return "low"
    if value > target["high"]:
        return "high"
    return "ok"


def zone_plan(g: WebServices, zone_uid: str, now: float, water: dict[str, Any] | None) -> dict[str, Any]:
    """Recipe and phase with day N of M, the targets, next irrigation, next water change and dose window."""
    tz = _tz(g)
    local = datetime.fromtimestamp(now, tz)
    a = _assignment(g, zone_uid)
    recipe: dict[str, Any] | None = None
    next_irrigation: dict[str, Any] | None = None
    if a is not None:
        day = a.day_index(local.date())
        phase = a.phase_on(local.date())
        later = [p for p in a.recipe.phases if phase is not None and p.start_day > phase.start_day]
        recipe = {
            "name": a.recipe.title or a.recipe.name,
            "start": a.start.isoformat(),
            "day": day + 1,  # day 0 of the recipe is the operator's "day 1"
            "phase": phase.name if phase is not None else None,
            "phase_day": None if phase is None else day - phase.start_day + 1,
            "phase_days": None if phase is None or not later else later[0].start_day - phase.start_day,
            "next_phase": later[0].name if later else None,
        }
        next_irrigation = _next_irrigation(a, local)
    return {
        "recipe": recipe,
        "targets": targets_now(g, zone_uid, now),
        "next_irrigation": next_irrigation,
        "next_water_change": _next_water_change(g, zone_uid, now, tz, water),
        "dosing": _dose_window(g, zone_uid, now),
    }


def _next_irrigation(a: Assignment, local: datetime) -> dict[str, Any] | None:
    """The next scheduled irrigation run today or in the coming week (the phase may change at midnight)."""
    for offset in range(8):
        d = local.date() + timedelta(days=offset)
        phase = a.phase_on(d)
        if phase is None:
            continue
        for run in sorted(phase.irrigation, key=lambda r: r.at):
            at = datetime.combine(d, run.at, tzinfo=local.tzinfo)
            if at > local:
                return {"at": at.timestamp(), "duration_s": run.duration_s}
    return None


def _next_water_change(
    g: WebServices, zone_uid: str, now: float, tz: ZoneInfo, water: dict[str, Any] | None
) -> dict[str, Any] | None:
    zw = getattr(getattr(g, "water", None), "zones", {}).get(zone_uid)
    if zw is None or water is None:
        return None
    wc = zw.cfg.water_change
    if water.get("phase") in CHANGE_PHASES:
        return {"state": "running", "at": None}
    if not wc.enabled:
        return {"state": "manual", "at": None}
    started = water.get("solution_started_at")
    if not started:
        return {"state": "unknown", "at": None}
    started_day = datetime.fromtimestamp(started, tz).date()
    scheduled = datetime.combine(started_day + timedelta(days=wc.interval_days), wc.time_of_day, tzinfo=tz)
    at = min(scheduled.timestamp(), started + wc.max_solution_age_days * DAY_S)
    return {"state": "due" if at <= now else "scheduled", "at": max(at, now)}


def _dose_window(g: WebServices, zone_uid: str, now: float) -> list[dict[str, Any]]:
    """Per dosed parameter: from when the controller may dose again (cool-down and blocks)."""
    dosing = g.automation.dosing
    if _assignment(g, zone_uid) is None:
        return []
    cooldown = g.automation.config.dosing.cooldown_s
    out = []
    for param in Param:
        st = dosing.state(zone_uid, param)
        ready = max(st.blocked_until or 0.0, (st.last_dose_at or 0.0) + cooldown)
        out.append(
            {
                "param": param.value,
                "last_dose_at": st.last_dose_at,
                "from": ready if ready > now else None,
                "halted": st.halted,
            }
        )
    return out
