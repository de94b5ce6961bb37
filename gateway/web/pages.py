"""Server-rendered pages: overview, zone (with charts), nodes, alerts; the script refreshes their live parts."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from gateway.store import events, water
from gateway.telemetry_metrics import CANONICAL_METRICS
from gateway.web import views
from gateway.web.actions import LOGIN_EXPIRED
from gateway.web.api import series_for
from gateway.web.auth import authenticate, current_session
from gateway.web.context import WebServices, gw, state
from gateway.web.manual import manual_controls, water_actions_valid
from gateway.web.plan_view import targets_now
from gateway.web.series import DECIMALS, LABELS, RANGES, ZONE_CHARTS
from gateway.web.svg import activity_svg, chart_svg

REFRESH_MS = 5000
RANGES_BY_SPAN = {r.span_s: r.label for r in RANGES.values()}
EXPIRED_MESSAGE = (
    "Not done: your login has expired (or you were not logged in), so the action was NOT performed."
    " Log in and try again."
)


async def render(request: web.Request, template: str, *, title: str, api: str | None, **context: Any) -> web.Response:
    """Render a page template with the common context (session, CSRF token, nav, script config)."""
    st = state(request)
    g = st.services
    session = current_session(request)
    flash = None
    if session is not None:
        flash, session.flash = session.flash, None
    csrf = session.csrf_token if session is not None else ""
    if session is None and request.query.get("login") == LOGIN_EXPIRED:
        flash = EXPIRED_MESSAGE
    ui_config = {
        "api": api,
        "refreshMs": REFRESH_MS,
        "tz": g.settings.gateway.timezone,
        "decimals": {m.value: d for m, d in DECIMALS.items()},
        "csrf": csrf,
        "path": request.path_qs,
        "admin": session is not None,
    }
    env = await st.templates.environment()
    html = env.get_template(template).render(
        title=title,
        gateway_id=g.settings.gateway.id,
        user=session.user if session is not None else None,
        csrf=csrf,
        flash=flash,
        path=request.path_qs,
        nav_zones=_nav_zones(request),
        ui_config=ui_config,
        login_enabled=bool(g.settings.web.admin_token),
        simulated_until=g.simulation.simulated_until if g.simulation is not None else None,
        **context,
    )
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


def _nav_zones(request: web.Request) -> list[tuple[str, str]]:
    """(uid, name) of every zone for the navigation, names from the config where it has them."""
    g = gw(request)
    known = g.registry.zone_uids()
    configured = [(z.uid, z.name or z.uid) for z in g.settings.zones if z.uid in known]
    names = dict(configured)
    return configured + [(uid, uid) for uid in sorted(known) if uid not in names]


def guard(request: web.Request) -> None:
    """Pages follow ``web.public_read``; without it an anonymous browser is sent to the login page."""
    if state(request).services.settings.web.public_read:
        return
    try:
        principal = authenticate(request)
    except web.HTTPUnauthorized:
        principal = None
    if principal is None:
        raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs)}")


async def overview_page(request: web.Request) -> web.Response:
    """GET /: zones, alerts, sync and the gateway itself."""
    guard(request)
    data = await views.overview(gw(request))
    return await render(request, "overview.html", title="Overview", api="/api/overview", data=data)


async def zone_page(request: web.Request) -> web.Response:
    """GET /zones/{zone}?range=24h|7d: the zone card, charts, water-change history, events, commands."""
    guard(request)
    g = gw(request)
    zone_uid = request.match_info["zone"]
    data = await views.zone_detail(g, zone_uid)
    if data is None:
        raise web.HTTPNotFound(text=f"unknown zone {zone_uid}")
    rng = RANGES.get(request.query.get("range", "24h"), RANGES["24h"])
    charts = []
    targets = data["plan"]["targets"]
    for metric in ZONE_CHARTS:
        series = await series_for(request, metric.value, rng.key)
        target = targets.get(metric.value)
        charts.append(
            {
                "metric": metric.value,
                "label": LABELS[metric],
                "unit": series.unit,
                "svg": chart_svg(series, g.settings.gateway.timezone, target),
                "target": target,
                "src": f"/zones/{zone_uid}/charts/{metric.value}.svg?range={rng.key}",
            }
        )
    activity = await activity_for(g, zone_uid, data["zone"], rng.span_s)
    return await render(
        request,
        "zone.html",
        title=data["zone"]["name"],
        api=f"/api/zones/{zone_uid}",
        data=data,
        charts=charts,
        range=rng,
        ranges=list(RANGES.values()),
        water_actions=data["zone"]["water"] is not None,
        water_valid=water_actions_valid((data["zone"]["water"] or {}).get("phase"), data["zone"]["locked"]),
        manual=manual_controls(g, data["zone"]),
        activity=activity,
    )


async def activity_for(g: WebServices, zone_uid: str, zone: dict[str, Any], span_s: int) -> str:
    """The pump-activity strip of a zone over the chart range: finished runs, the runs going on now, doses."""
    zone_id = g.registry.zone_id(zone_uid)
    end = g.clock.time()
    start = end - span_s
    # An unknown zone has no runs and no doses (the queries would match nothing).
    finished = await water.runs_finished_since(g.db, zone_id, start) if zone_id is not None else []
    runs = [(r.pump_channel, r.started_at, r.finished_at) for r in finished]
    # A pump ON now has no finished run yet: draw it up to now.
    runs += [(str(p["channel"]), end - 1.0, end) for p in zone.get("pumps") or [] if p.get("relay_on")]
    doses = []
    for e in await events.since(g.db, zone_id, "DOSE", start) if zone_id is not None else []:
        ml = e["details"].get("ml") or 0.0
        volume = float(ml) if isinstance(ml, int | float | str) else 0.0
        doses.append((str(e["details"].get("reagent")), e["created_at"], volume))
    channels = [str(p["channel"]) for p in zone.get("pumps") or []]
    channels += sorted({c for c, _, _ in runs} - set(channels))
    label = f"Pump activity and doses, {RANGES_BY_SPAN.get(span_s, '')}".rstrip(", ")
    return activity_svg(runs, doses, channels, start, end, g.settings.gateway.timezone, label)


async def chart_image(request: web.Request) -> web.Response:
    """GET /zones/{zone}/charts/{metric}.svg?range=: one chart as an SVG document."""
    guard(request)
    metric = request.match_info["metric"]
    if metric not in CANONICAL_METRICS:
        raise web.HTTPNotFound(text="unknown metric")
    series = await series_for(request, metric)
    g = gw(request)
    target = targets_now(g, request.match_info["zone"], g.clock.time()).get(metric)
    svg = chart_svg(series, g.settings.gateway.timezone, target)
    return web.Response(text=svg, content_type="image/svg+xml", headers={"Cache-Control": "no-store"})


async def nodes_page(request: web.Request) -> web.Response:
    """GET /nodes."""
    guard(request)
    data = await views.nodes_view(gw(request))
    return await render(request, "nodes.html", title="Nodes", api="/api/nodes", data=data)


async def alerts_page(request: web.Request) -> web.Response:
    """GET /alerts: safety locks with their reset button, active and recent alerts."""
    guard(request)
    data = await views.alerts_view(gw(request))
    return await render(request, "alerts.html", title="Alerts", api="/api/alerts", data=data)


def add_routes(app: web.Application) -> None:
    """Register the pages."""
    app.router.add_get("/", overview_page)
    app.router.add_get("/zones/{zone}", zone_page)
    app.router.add_get("/zones/{zone}/charts/{metric}.svg", chart_image)
    app.router.add_get("/nodes", nodes_page)
    app.router.add_get("/alerts", alerts_page)
