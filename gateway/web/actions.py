"""Operator actions (reset a safety lock, start/abort/acknowledge a water change), as JSON API and as forms."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from gateway.water.cycle import OperatorRequest
from gateway.web.auth import Principal, json_error, require_admin
from gateway.web.context import gw

if TYPE_CHECKING:
    from gateway.web.context import WebServices

log = logging.getLogger(__name__)


class ActionError(Exception):
    """An action could not be done; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def reset_safety(g: WebServices, zone_uid: str, by: str) -> list[str]:
    """Resolve the zone's safety alerts and unlock it; records who did it; returns the resolved codes."""
    if g.registry.zone_id(zone_uid) is None:
        raise ActionError(404, f"unknown zone {zone_uid!r}")
    # The safety service resolves, unlocks and records the SAFETY_LOCK_RESET event with ``by``.
    return list(await g.safety.reset(zone_uid, by))


async def water_action(g: WebServices, zone_uid: str, action: str, by: str) -> None:
    """Ask the water machine to start, abort or acknowledge a water change (done on its next tick)."""
    if g.registry.zone_id(zone_uid) is None:
        raise ActionError(404, f"unknown zone {zone_uid!r}")
    try:
        request = OperatorRequest(action)  # the URL's word, parsed once at the edge
    except ValueError:
        raise ActionError(404, f"unknown water action {action!r}") from None
    if not g.water.request(zone_uid, request, by):
        raise ActionError(409, f"zone {zone_uid!r} has no water cycle configured")
    log.info("water %s requested in zone %s by %s", action, zone_uid, by)


# ---- JSON API ---------------------------------------------------------------------------------
async def api_reset(request: web.Request) -> web.Response:
    """POST /api/zones/{zone}/safety/reset → {"zone", "resolved": [codes], "by"}."""
    who = require_admin(request)
    zone_uid = request.match_info["zone"]
    try:
        codes = await reset_safety(gw(request), zone_uid, who.by)
    except ActionError as exc:
        raise json_error(_http_error(exc.status), exc.message) from None
    return web.json_response({"zone": zone_uid, "resolved": codes, "by": who.by})


async def api_water(request: web.Request) -> web.Response:
    """POST /api/zones/{zone}/water/{action} (start | abort | ack) → 202 {"zone", "action", "accepted", "by"}."""
    who = require_admin(request)
    zone_uid, action = request.match_info["zone"], request.match_info["action"]
    try:
        await water_action(gw(request), zone_uid, action, who.by)
    except ActionError as exc:
        raise json_error(_http_error(exc.status), exc.message) from None
    return web.json_response({"zone": zone_uid, "action": action, "accepted": True, "by": who.by}, status=202)


# ---- HTML forms -------------------------------------------------------------------------------
async def form_reset(request: web.Request) -> web.Response:
    """The "Reset safety lock" button: POST form, then back to the page it came from."""
    form = await request.post()
    who = form_admin(request, form, safe_next(form.get("next")))
    try:
        codes = await reset_safety(gw(request), request.match_info["zone"], who.by)
    except ActionError as exc:
        raise json_error(_http_error(exc.status), exc.message) from None
    _flash(who, f"Safety lock reset: {', '.join(codes)}" if codes else "Safety lock reset: nothing was locked")
    raise web.HTTPSeeOther(safe_next(form.get("next")))


async def form_water(request: web.Request) -> web.Response:
    """The water-change buttons of the zone page."""
    form = await request.post()
    zone_uid, action = request.match_info["zone"], request.match_info["action"]
    who = form_admin(request, form, safe_next(form.get("next"), f"/zones/{zone_uid}"))
    try:
        await water_action(gw(request), zone_uid, action, who.by)
    except ActionError as exc:
        _flash(who, f"Water change {action} refused: {exc.message}")
    else:
        done = {"start": "Water change started", "abort": "Water change aborted"}
        _flash(who, done.get(action, "Water-change failure acknowledged"))
    raise web.HTTPSeeOther(safe_next(form.get("next"), f"/zones/{zone_uid}"))


LOGIN_EXPIRED = "expired"


def form_admin(request: web.Request, form: Any, back: str) -> Principal:
    """The admin behind a posted form; without a live login, back to the page with the action NOT done.

    A login that expired while the page was open must not lose the operator on the login page nor leave
    them guessing: the page says the action was not performed (``?login=expired``) and offers the login.
    """
    try:
        return require_admin(request, form)
    except web.HTTPUnauthorized:
        raise web.HTTPSeeOther(with_query(back, "login", LOGIN_EXPIRED)) from None


def with_query(path: str, key: str, value: str) -> str:
    """``path`` with ``key=value`` added to its query (any earlier value of ``key`` dropped)."""
    base, _, query = path.partition("?")
    kept = [part for part in query.split("&") if part and not part.startswith(f"{key}=")]
    return f"{base}?{'&'.join([*kept, f'{quote(key)}={quote(value)}'])}"


def set_flash(who: Principal, message: str) -> None:
    """A one-time message for the next page this admin's browser loads."""
    _flash(who, message)


def _flash(who: Principal, message: str) -> None:
    if who.session is not None:
        who.session.flash = message


def safe_next(value: object, default: str = "/") -> str:
    """A local path to redirect to (never another site)."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def _http_error(status: int) -> type[web.HTTPException]:
    return {404: web.HTTPNotFound, 409: web.HTTPConflict, 503: web.HTTPServiceUnavailable}.get(
        status, web.HTTPBadRequest
    )


def add_routes(app: web.Application) -> None:
    """Register the action endpoints (API and forms)."""
    app.router.add_post("/api/zones/{zone}/safety/reset", api_reset)
    app.router.add_post("/api/zones/{zone}/water/{action}", api_water)
    app.router.add_post("/zones/{zone}/safety/reset", form_reset)
    app.router.add_post("/zones/{zone}/water/{action}", form_water)
