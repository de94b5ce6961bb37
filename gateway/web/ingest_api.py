"""POST /ingest/telemetry: the REST twin of MQTT telemetry, same validation and write path."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from firmware_contracts.validate import MessageKind, check, load_schema
from gateway.ingest import SampleIn
from gateway.web.auth import require_admin
from gateway.web.context import gw
from gateway.web.jsonbody import read_json

MAX_INGEST_BODY = 1024 * 1024
# The MQTT payload's limit, from the same schema: one request carries at most as many samples as one message.
MAX_SAMPLES = int(load_schema("telemetry")["$defs"]["sample_list"]["maxItems"])


async def ingest_telemetry(request: web.Request) -> web.Response:
    """Body {"samples":[{node_uid, zone_uid?, metric_type, value, ts, channel?, raw?}]}; admin only."""
    g = gw(request)
    require_admin(request)
    body = await read_json(request, MAX_INGEST_BODY)
    samples = body.get("samples") if isinstance(body, dict) else None
    if not isinstance(samples, list) or not samples:
        return web.json_response({"status": "error", "error": 'body must be {"samples": [...]}'}, status=422)
    if len(samples) > MAX_SAMPLES:  # said before the schema walks thousands of samples to explain it
        return web.json_response(
            {"status": "error", "error": "too_many_samples",
             "detail": f"{len(samples)} samples, at most {MAX_SAMPLES} per request"},
            status=413,
        )
    # The same JSON Schema as MQTT telemetry: unknown keys, channel syntax and the sample count (maxItems).
    failure = check(MessageKind.TELEMETRY, body)
    if failure is not None:
        return web.json_response(
            {"status": "error", "error": failure.code.value, "detail": failure.message,
             "rejected": [{"reason": failure.code.value, "detail": failure.message}]},
            status=422,
        )
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
