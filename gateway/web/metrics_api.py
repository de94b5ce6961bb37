"""GET /metrics: Prometheus text exposition of the gateway's registry (the services feed the handles)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.web.auth import require_read
from gateway.web.context import gw, state
from gateway.web.sensor_metrics import sensor_exposition


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    require_read(request)
    g = gw(request)
    g.metrics.web_locked_out.set(state(request).limiter.locked())
    # The live families (sensors, targets, pumps) are built per scrape from the current state.
    data = generate_latest(g.metrics.registry) + await sensor_exposition(g)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    """Register /metrics."""
    app.router.add_get("/metrics", metrics)
