"""Manual control for the admin: run a pump for a bounded time, stop it, give one dose.

Every action is a command through ``gw.commands.submit`` and so through the safety gate's interlock: the page
never touches a relay. A refusal comes back as the interlock's reason, shown to the operator as it is.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.commands import CommandRefused
from gateway.water.cycle import CHANGE_PHASES
from gateway.web.actions import form_admin, safe_next, set_flash
from gateway.web.context import gw

if TYPE_CHECKING:
    from gateway.web.context import WebServices

log = logging.getLogger(__name__)

MAX_RUN_S = 600  # a manual run is bounded; longer runs belong in a schedule
DEFAULT_RUN_S = 60
MAX_DOSE_ML = 50.0
DEFAULT_DOSE_ML = 2.0
DOSER_ROLES = ("ph_down", "ph_up", "nutrient_a", "nutrient_b")
REAGENTS = {"ph_down": "pH down", "ph_up": "pH up", "nutrient_a": "nutrient A", "nutrient_b": "nutrient B"}
ROLE_WORDS = {
    "recirc": "recirculation pump",
    "drain": "drain pump (empties the tank)",
    "fill": "fill pump (adds fresh water)",
    "irrigation": "irrigation pump",
}


REASON_WORDS = {
    "locked": "the pump is locked by the safety loop ({0}); fix the cause, then reset the safety lock",
    "alert": "a critical alert is active in this zone ({0})",
    "watchdog_tripped": "the relay watchdog has tripped",
    "level_unavailable": "the water level is unknown or stale",
    "dry_run": "the water level is below the dry-run limit",
    "too_many_failures": "the pump failed too often recently",
    "sensor_unavailable": "a sensor the pump needs is unavailable ({0})",
}


def explain_refusal(reason: str) -> str:
    """The interlock's reason code in words, with the code itself kept for the technician."""
    head, _, arg = reason.partition(":")
    words = REASON_WORDS.get(head)
    return f"{words.format(arg)} [{reason}]" if words else reason


def water_actions_valid(phase: str | None, locked: bool = False) -> dict[str, bool]:
    """Which water-change buttons make sense in this phase (a locked zone cannot start a change)."""
    return {
        "start": phase == "NORMAL_RECIRC" and not locked,
        "abort": phase in CHANGE_PHASES,
        "ack": phase == "FAILED",
    }


def manual_controls(g: WebServices, zone: dict[str, Any]) -> dict[str, Any]:
    """The pumps and dosers of a zone the admin can drive by hand, with their lock state."""
    pumps = []
    seen = set()
    for p in zone.get("pumps") or []:
        seen.add((p.get("node_uid"), p["channel"]))
        pumps.append(
            {
                "channel": p["channel"],
                "node_uid": p.get("node_uid"),
                "role": p.get("role"),
                "what": ROLE_WORDS.get(str(p.get("role")), f"{p.get('role')} pump"),
                "on": bool(p.get("desired_on")),
                "locked": bool(p.get("locked")),
                "lock_codes": list(p.get("lock_codes") or []),
            }
        )
    cfg = next((z for z in g.settings.zones if z.uid == zone["uid"]), None)
    dosers = []
    if cfg is not None:
        irrigation = cfg.actuators.get("irrigation")
        if irrigation is not None and (irrigation.node_uid, irrigation.channel) not in seen:
            pumps.append(
                {
                    "channel": irrigation.channel,
                    "node_uid": irrigation.node_uid,
                    "role": "irrigation",
                    "what": ROLE_WORDS["irrigation"],
                    "on": False,
                    "locked": False,
                    "lock_codes": [],
                }
            )
        for role in DOSER_ROLES:
            act = cfg.actuators.get(role)
            if act is not None:
                dosers.append({"channel": act.channel, "node_uid": act.node_uid, "reagent": REAGENTS[role]})
    return {
        "pumps": pumps,
        "dosers": dosers,
        "max_run_s": MAX_RUN_S,
        "default_run_s": DEFAULT_RUN_S,
        "max_dose_ml": MAX_DOSE_ML,
        "default_dose_ml": DEFAULT_DOSE_ML,
    }


class ManualError(Exception):
    """The form does not describe a valid manual action."""


def parse_manual(form: Any) -> tuple[str, str | None, str, dict[str, Any], str]:
    """(channel, node_uid, cmd, params, words) from the posted form; raises ManualError with the reason."""
    channel = str(form.get("channel") or "")
    node_uid = str(form.get("node_uid") or "") or None
    action = str(form.get("action") or "")
    if not channel or len(channel) > 64 or (node_uid is not None and len(node_uid) > 64):
        raise ManualError("no pump chosen")
    if action == "run":
        seconds = _number(form.get("duration_s"), "run time")
        if not 1 <= seconds <= MAX_RUN_S:
            raise ManualError(f"run time must be 1 to {MAX_RUN_S} s")
        return channel, node_uid, "run_pump", {"duration_s": int(seconds)}, f"run of {channel} for {int(seconds)} s"
    if action == "stop":
        return channel, node_uid, "stop_pump", {}, f"stop of {channel}"
    if action == "dose":
        ml = _number(form.get("ml"), "dose")
        if not 0 < ml <= MAX_DOSE_ML:
            raise ManualError(f"dose must be more than 0 and at most {MAX_DOSE_ML:g} mL")
        return channel, node_uid, "dose", {"ml": round(ml, 1)}, f"dose of {ml:g} mL on {channel}"
    raise ManualError(f"unknown action {action!r}")


def _number(value: object, what: str) -> float:
    try:
        number = float(str(value))
    except ValueError:
        raise ManualError(f"{what} must be a number") from None
    if not math.isfinite(number):
        raise ManualError(f"{what} must be a number")
    return number


async def form_manual(request: web.Request) -> web.Response:
    """POST /zones/{zone}/manual: one manual command from the zone page, then back to the page."""
    form = await request.post()
    zone_uid = request.match_info["zone"]
    back = safe_next(form.get("next"), f"/zones/{zone_uid}")
    who = form_admin(request, form, back)
    g = gw(request)
    if g.registry.zone_id(zone_uid) is None:
        raise web.HTTPNotFound(text=f"unknown zone {zone_uid}")
    try:
        channel, node_uid, cmd, params, words = parse_manual(form)
    except ManualError as exc:
        set_flash(who, f"Not done: {exc}.")
        raise web.HTTPSeeOther(back) from None
    try:
        record = await g.commands.submit(zone_uid, channel, cmd, params, node_uid=node_uid, source="web")
    except CommandRefused as exc:
        log.info("manual %s in zone %s by %s refused: %s", words, zone_uid, who.by, exc.reason)
        set_flash(who, f"Refused by the safety interlock: manual {words} not done — {explain_refusal(exc.reason)}.")
    else:
        log.info("manual %s in zone %s by %s: %s", words, zone_uid, who.by, record["status"])
        set_flash(who, f"Manual {words} sent (command {record['cmd_id'][:8]}, {record['status']}).")
    raise web.HTTPSeeOther(back)


def add_routes(app: web.Application) -> None:
    """Register the manual-control form."""
    app.router.add_post("/zones/{zone}/manual", form_manual)
