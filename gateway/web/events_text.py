"""Zone events as sentences an operator reads (local times, words instead of ``key=value``).

Rendered on the server for both the page and the JSON API (``text``), so the browser script only shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.jsonvalue import str_tuple
from gateway.web.templating import fmt_age

TRIGGERS = {
    "operator": "by the operator",
    "solution_age": "because the solution was too old",
    "schedule": "on schedule",
    "ec_drift": "because EC drifted from the fresh solution",
}
REAGENTS = {"ph_down": "pH down", "ph_up": "pH up", "nutrient_a": "nutrient A", "nutrient_b": "nutrient B"}
PARAMS = {"ph": "pH", "ec": "EC"}
PHASES = {
    "NORMAL_RECIRC": "normal recirculation",
    "WATER_CHANGE_DRAIN": "draining",
    "WATER_CHANGE_FILL": "filling",
    "WATER_CHANGE_STABILIZE": "stabilising",
    "FAILED": "failed",
}


def _local(value: object, tz: ZoneInfo) -> str:
    """An epoch number or ISO text as local 'YYYY-MM-DD HH:MM' (anything else as it is)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return (parsed if parsed.tzinfo is None else parsed.astimezone(tz)).strftime("%Y-%m-%d %H:%M")
    return "?"


def _num(value: object, decimals: int = 1) -> str:
    return f"{value:.{decimals}f}" if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def _age(value: object) -> str:
    """``fmt_age`` of a details value; TypeError (the generic sentence) when it is not a number."""
    if value is None or isinstance(value, int | float):
        return fmt_age(value)
    raise TypeError(f"expected a duration, got {type(value).__name__}")


def _by(d: Mapping[str, object]) -> str:
    return f" by {d['by']}" if d.get("by") else ""


def _started(d: Mapping[str, object], tz: ZoneInfo) -> str:
    trigger = TRIGGERS.get(str(d.get("trigger")), f"({d.get('trigger')})")
    text = f"Water change started {trigger}{_by(d)}"
    parts = []
    if d.get("water_level") is not None:
        parts.append(f"level {_num(d['water_level'], 0)} %")
    if d.get("ec") is not None:
        parts.append(f"EC {_num(d['ec'], 2)} mS/cm")
    if d.get("solution_started_at"):
        parts.append(f"old solution made {_local(d['solution_started_at'], tz)}")
    return text + (f" ({', '.join(parts)})." if parts else ".")


def _completed(d: Mapping[str, object], _tz: ZoneInfo) -> str:
    took = f" in {_age(d['duration_s'])}" if isinstance(d.get("duration_s"), int | float) else ""
    tail = f"; EC {_num(d['ec'], 2)} mS/cm" if d.get("ec") is not None else ""
    level = f", level {_num(d['water_level'], 0)} %" if d.get("water_level") is not None else ""
    return f"Water change completed{took}{level}{tail}."


def _reason(d: Mapping[str, object]) -> str:
    return str(d.get("reason") or d.get("code") or "unknown reason").replace("_", " ")


SENTENCES: dict[str, Callable[[Mapping[str, object], ZoneInfo], str]] = {
    "WATER_CHANGE_STARTED": _started,
    "WATER_CHANGE_COMPLETED": _completed,
    "WATER_CHANGE_PHASE": lambda d, _: (
        f"Water change: {PHASES.get(str(d.get('from')), d.get('from'))} → {PHASES.get(str(d.get('to')), d.get('to'))}."
    ),
    "WATER_CHANGE_FAILED": lambda d, _: (
        f"Water change FAILED while {PHASES.get(str(d.get('phase')), d.get('phase'))}: {_reason(d)}."
    ),
    "WATER_CHANGE_ABORTED": lambda d, _: (
        f"Water change aborted{_by(d)} while {PHASES.get(str(d.get('phase')), d.get('phase'))}."
    ),
    "WATER_CHANGE_ACKNOWLEDGED": lambda d, _: f"Water-change failure acknowledged{_by(d)}.",
    "DOSE": lambda d, _: (
        f"Dosed {_num(d.get('ml'), 1)} mL of {REAGENTS.get(str(d.get('reagent')), d.get('reagent'))} "
        f"({PARAMS.get(str(d.get('parameter')), d.get('parameter'))} was {_num(d.get('value'), 2)}, "
        f"aiming at {_num(d.get('target'), 2)})."
    ),
    "IRRIGATION": lambda d, tz: (
        f"Irrigation for {_age(d.get('duration_s'))} (scheduled {_local(d.get('scheduled_at'), tz)}"
        f"{', phase ' + str(d['phase']) if d.get('phase') else ''})."
    ),
    "IRRIGATION_SKIPPED": lambda d, tz: (
        f"Irrigation of {_local(d.get('scheduled_at'), tz)} skipped: missed by {_age(d.get('late_s'))}."
    ),
    "LIGHTS_ON": lambda d, _: "Lights switched on.",
    "LIGHTS_OFF": lambda d, _: "Lights switched off.",
    "COMMAND_REFUSED": lambda d, _: (
        f"Command {d.get('cmd')} on {d.get('channel')} from {d.get('source')} refused: {d.get('reason')}."
    ),
    "SAFETY_STOP": lambda d, _: f"Safety stop: pump {d.get('pump')} switched off ({_reason(d)}).",
    "SAFETY_LOCK": lambda d, _: f"Pump {d.get('pump')} locked by the safety loop ({_reason(d)}).",
    "SAFETY_LOCK_RESET": lambda d, _: (
        f"Safety lock reset{_by(d)}"
        f"{' (resolved ' + ', '.join(str_tuple(d['resolved'])) + ')' if d.get('resolved') else ''}."
    ),
    "NC_PUMP_RESTORED": lambda d, _: f"Pump {d.get('pump')} returned to its fail-safe ON ({_reason(d)}).",
    "NODE_ONLINE": lambda d, _: f"Node {d.get('node_uid')} came online.",
    "NODE_OFFLINE": lambda d, _: f"Node {d.get('node_uid')} went offline ({_reason(d)}).",
    "CONFIG_APPLIED": lambda d, _: f"Configuration version {d.get('version')} applied.",
    "MANUAL_COMMAND": lambda d, _: f"Manual {d.get('what')}{_by(d)}.",
    "SIMULATED_HISTORY": lambda d, tz: (
        f"Demo start: {_num(d.get('days'), 0)} days of simulated history written; everything before "
        f"{_local(d.get('until'), tz)} is simulated."
    ),
}


def event_sentence(event_type: str, details: Mapping[str, object], tz: str) -> str:
    """One sentence for an event; unknown types fall back to their name and plain-worded details."""
    zone = ZoneInfo(tz)
    render = SENTENCES.get(event_type)
    if render is not None:
        try:
            text = render(details, zone)
            return f"{text} (simulated)" if details.get("simulated") and event_type != "SIMULATED_HISTORY" else text
        except (KeyError, TypeError, ValueError):
            pass  # unexpected details: fall through to the generic sentence rather than fail the page
    words = event_type.replace("_", " ").capitalize()
    parts = [f"{k.replace('_', ' ')} {_local(v, zone) if k.endswith('_at') else v}" for k, v in details.items()]
    return f"{words}: {', '.join(parts)}." if parts else f"{words}."
