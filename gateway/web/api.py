"""Read-only JSON API: health, status, overview, zones, charts, nodes, alerts, commands."""

from __future__ import annotations

import asyncio
import functools
from importlib import resources

from aiohttp import web

from gateway.telemetry_metrics import CANONICAL_METRICS
from gateway.web import views
from gateway.web.auth import json_error, require_read
from gateway.web.chart_query import load_series
from gateway.web.context import gw
from gateway.web.series import RANGES, ChartSeries


async def healthz(request: web.Request) -> web.Response:
    """200 once the gateway is ready, 503 before and while the disk is full (always open: probes use it)."""
    g = gw(request)
    if not g.ready.is_set():
        return web.json_response({"status": "starting"}, status=503)
    level = g.storage.level.value
    if level == "full":
        return web.json_response(
            {"status": "degraded", "reason": "storage full: telemetry cannot be stored", "storage_level": level,
             "uptime_s": round(g.uptime_s(), 1)},
            status=503,
        )
    return web.json_response({"status": "ok", "uptime_s": round(g.uptime_s(), 1), "storage_level": level})


async def status(request: web.Request) -> web.Response:
    """Gateway id, uptime, broker clients, nodes by state, ingest queues."""
    require_read(request)
    g = gw(request)
    nodes = g.registry.nodes()
    by_state: dict[str, int] = {}
    for n in nodes:
        key = "online" if n.online else "offline"
        by_state[key] = by_state.get(key, 0) + 1
    body: dict[str, object] = {
        "gateway_id": g.settings.gateway.id,
        "greenhouse_uid": g.settings.gateway.greenhouse_uid,
        "mode": g.settings.gateway.mode.value,
        "uptime_s": round(g.uptime_s(), 1),
        "broker": {"port": g.broker.port, "clients": g.broker.clients()},
        "nodes": {"total": len(nodes), **by_state},
        "ingest": {
            "committed": g.writer.committed,
            "pending": g.writer.depth,
            "router_queue": g.router.depth,
            "last_commit_error": g.writer.last_commit_error,
        },
        "sync": views.sync_view(g),
        "storage_level": g.storage.level.value,
        "storage": g.storage.status(),
    }
    return web.json_response(body)


async def overview(request: web.Request) -> web.Response:
    """GET /api/overview: what the overview page shows."""
    require_read(request)
    return web.json_response(await views.overview(gw(request)))


async def zones(request: web.Request) -> web.Response:
    """GET /api/zones: every zone's summary."""
    require_read(request)
    g = gw(request)
    now = g.clock.time()
    active = await views.alerts_with_zone(g, await g.alerts.active())
    return web.json_response({"now": now, "zones": await views.zone_summaries(g, now, active)})


async def zone(request: web.Request) -> web.Response:
    """GET /api/zones/{zone}: one zone with history and commands."""
    require_read(request)
    detail = await views.zone_detail(gw(request), request.match_info["zone"])
    if detail is None:
        raise json_error(web.HTTPNotFound, "unknown zone")
    return web.json_response(detail)


async def chart(request: web.Request) -> web.Response:
    """GET /api/zones/{zone}/chart?metric=ph&range=24h: bucketed min/max/avg points."""
    require_read(request)
    return web.json_response((await series_for(request)).to_dict())


async def series_for(request: web.Request, metric_name: str | None = None, range_key: str | None = None) -> ChartSeries:
    """Parse zone, metric and range from the request and load the series (404/422 on bad input)."""
    g = gw(request)
    zone_uid = request.match_info["zone"]
    zone_id = g.registry.zone_id(zone_uid)
    if zone_id is None:
        raise json_error(web.HTTPNotFound, "unknown zone")
    name = metric_name if metric_name is not None else request.query.get("metric", "")
    metric = CANONICAL_METRICS.get(name)
    rng = RANGES.get(range_key if range_key is not None else request.query.get("range", "24h"))
    if metric is None:
        raise json_error(web.HTTPUnprocessableEntity, f"metric must be one of {sorted(CANONICAL_METRICS)}")
    if rng is None:
        raise json_error(web.HTTPUnprocessableEntity, f"range must be one of {sorted(RANGES)}")
    return await load_series(g.db, zone_id, zone_uid, metric, rng, g.clock.time())


async def nodes(request: web.Request) -> web.Response:
    """GET /api/nodes."""
    require_read(request)
    return web.json_response(await views.nodes_view(gw(request)))


async def alerts(request: web.Request) -> web.Response:
    """GET /api/alerts: active, recent and the zones with a safety lock."""
    require_read(request)
    limit = _int_query(request, "limit", 100, 1, 1000)
    return web.json_response(await views.alerts_view(gw(request), limit))


async def commands(request: web.Request) -> web.Response:
    """GET /api/commands?zone=&limit=: recent commands, newest first."""
    require_read(request)
    g = gw(request)
    zone_uid = request.query.get("zone")
    zone_id = None
    if zone_uid:
        zone_id = g.registry.zone_id(zone_uid)
        if zone_id is None:
            raise json_error(web.HTTPNotFound, "unknown zone")
    limit = _int_query(request, "limit", 50, 1, 500)
    return web.json_response({"commands": await views.recent_commands(g, zone_id, limit)})


async def get_command(request: web.Request) -> web.Response:
    """GET /api/commands/{cmd_id}."""
    require_read(request)
    record = await gw(request).commands.get(request.match_info["cmd_id"])
    if record is None:
        return web.json_response({"error": "not found"}, status=404)
    return web.json_response(record)


async def openapi(request: web.Request) -> web.Response:
    """GET /api/openapi.yaml: this API's description."""
    return web.Response(text=await asyncio.to_thread(_openapi_text), content_type="application/yaml")


@functools.cache
def _openapi_text() -> str:
    return resources.files("gateway.web").joinpath("openapi.yaml").read_text(encoding="utf-8")


def _int_query(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise json_error(web.HTTPUnprocessableEntity, f"{key} must be an integer") from None
    if not lo <= value <= hi:
        raise json_error(web.HTTPUnprocessableEntity, f"{key} must be within {lo}..{hi}")
    return value


def add_routes(app: web.Application) -> None:
    """Register the read API."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/overview", overview)
    app.router.add_get("/api/zones", zones)
    app.router.add_get("/api/zones/{zone}", zone)
    app.router.add_get("/api/zones/{zone}/chart", chart)
    app.router.add_get("/api/nodes", nodes)
    app.router.add_get("/api/alerts", alerts)
    app.router.add_get("/api/commands", commands)
    app.router.add_get("/api/commands/{cmd_id}", get_command)
    app.router.add_get("/api/openapi.yaml", openapi)
