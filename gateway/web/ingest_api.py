"""POST /ingest/telemetry: the REST twin of MQTT telemetry, same validation and write path."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from firmware_contracts.schema_store import schema_int
from firmware_contracts.validate import MessageKind, check
from gateway.broker.messages import Ack
from gateway.ingest import SampleIn
from gateway.web.auth import require_admin
from gateway.web.context import gw
from gateway.web.jsonbody import read_json

MAX_INGEST_BODY = 1024 * 1024
# The MQTT payload's limit, from the same schema: one request carries at most as many samples as one message.
MAX_SAMPLES = schema_int("telemetry", "/$defs/sample_list/maxItems")
# A commit that has not happened by then (disk full, I/O error) answers 503: the client retries later
# (with an identity per sample, a retry of what was committed after all is stored once).
COMMIT_TIMEOUT_S = 30.0


async def ingest_telemetry(request: web.Request) -> web.Response:
    """Body {"samples":[{node_uid, zone_uid?, metric_type, value, ts, channel?, raw?, boot?, seq?}]}; admin only.

    Answers once the accepted samples are committed.
    """
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
    shape_errors: list[dict[str, object]] = []
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
                boot=s.get("boot"),
                seq=s.get("seq"),
            )
        )
    ack = Ack()
    result = await g.ingest.accept(parsed, source="http", ack=ack)
    if ack.deferred and not await _committed(g, ack):
        # Queued, committed later if space returns; the client retries (with boot/seq stored once).
        return web.json_response({"status": "error", "error": "not_committed", "count": result.accepted},
                                 status=503, headers={"Retry-After": "5"})
    rejected = shape_errors + result.rejected
    if rejected:
        return web.json_response(
            {"status": "partial" if result.accepted else "error", "count": result.accepted, "rejected": rejected},
            status=207 if result.accepted else 422,
        )
    body_out: dict[str, object] = {"status": "ok", "count": result.accepted}
    if result.duplicates:
        body_out["duplicates"] = result.duplicates  # identities already committed: not stored again
    return web.json_response(body_out)


async def _committed(g: object, ack: Ack) -> bool:
    """2xx only once the accepted samples are committed (a kill -9 after it loses none of them); gives up after
    ``COMMIT_TIMEOUT_S``, or at once while the storage guard knows the disk is full."""
    storage = getattr(g, "storage", None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + COMMIT_TIMEOUT_S
    while not ack.done():
        if loop.time() >= deadline or (storage is not None and storage.full):
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ack.wait(), 0.25)
    return not ack.failed


def add_routes(app: web.Application) -> None:
    """Register the ingest endpoint."""
    app.router.add_post("/ingest/telemetry", ingest_telemetry)
