"""POST /ingest/telemetry: the REST twin of MQTT telemetry, same validation and write path."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.ingest import SampleIn
from gateway.web.auth import require_admin
from gateway.web.context import gw

MAX_INGEST_BODY = 1024 * 1024


async def ingest_telemetry(request: web.Request) -> web.Response:
    """Body {"samples":[{node_uid, zone_uid?, metric_type, value, ts, channel?, raw?}]}; admin only."""
    g = gw(request)
    require_admin(request)
    if request.content_length is not None and request.content_length > MAX_INGEST_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_INGEST_BODY, actual_size=request.content_length)
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return web.json_response({"status": "error", "error": "malformed_json"}, status=400)
    samples = body.get("samples") if isinstance(body, dict) else None
    if not isinstance(samples, list) or not samples:
        return web.json_response({"status": "error", "error": 'body must be {"samples": [...]}'}, status=422)
    parsed: list[SampleIn] = []
    shape_errors: list[dict[str, Any]] = []
    for i, s in enumerate(samples):
        if not isinstance(s, dict) or not isinstance(s.get("node_uid"), str) or "metric_type" not in s:
            shape_errors.append({"index": i, "reason": "schema", "detail": "node_uid and metric_type are required"})
            continue
        parsed.append(
            SampleIn(
                node_uid=s["node_uid"],
                metric_type=s["metric_type"],
                value=s.get("value"),
                ts=s.get("ts"),
                zone_uid=s.get("zone_uid"),
                channel=s.get("channel"),
                raw=s.get("raw"),
            )
        )
    result = await g.ingest.accept(parsed, source="http")
    rejected = shape_errors + result.rejected
    if rejected:
        return web.json_response(
            {"status": "partial" if result.accepted else "error", "count": result.accepted, "rejected": rejected},
            status=207 if result.accepted else 422,
        )
    return web.json_response({"status": "ok", "count": result.accepted})


def add_routes(app: web.Application) -> None:
    """Register the ingest endpoint."""
    app.router.add_post("/ingest/telemetry", ingest_telemetry)
