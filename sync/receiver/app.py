"""aiohttp application implementing ``sync/openapi.yaml`` on PostgreSQL, plus admin and fault switches."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from sync.receiver import store
from sync.receiver.admission import Admission, AdmissionLimits
from sync.receiver.faults import Faults
from sync.receiver.schema import Partitions, ensure_schema
from sync.receiver.validate import GENERATION, STREAMS, Item, check_envelope, check_items, int_column, telemetry_columns

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ReceiverState:
    """Everything the handlers share."""

    dsn: str
    token: str
    admin_token: str
    faults: Faults = field(default_factory=Faults)
    stats: Counter[str] = field(default_factory=Counter)
    pool: asyncpg.Pool | None = None
    pool_size: int = 8
    admission: Admission = field(default_factory=Admission)
    partitions: Partitions = field(default_factory=Partitions)
    released: asyncio.Event = field(default_factory=asyncio.Event)  # cleared while faults.hold_batches

    def sync_hold(self) -> None:
        """Follow the hold_batches switch (tests hold admitted batches to fill the limits)."""
        if self.faults.hold_batches:
            self.released.clear()
        else:
            self.released.set()

    @property
    def db(self) -> asyncpg.Pool:
        """The connection pool (open while the app runs)."""
        if self.pool is None:
            raise RuntimeError("receiver pool not open")
        return self.pool


STATE: web.AppKey[ReceiverState] = web.AppKey("receiver_state", ReceiverState)


class _Dropped(Exception):
    """The connection was aborted on purpose (fault injection)."""


def _json(status: int, doc: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(doc, status=status, headers=headers)


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    return header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), token.encode())


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
    raise _Dropped


@web.middleware
async def gateway_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth for /v1, then the injected slowness, failures and connection resets."""
    st = request.app[STATE]
    if not request.path.startswith("/v1/"):
        return await handler(request)
    st.stats["requests"] += 1
    if not _authorized(request, st.token):
        st.stats["status_401"] += 1
        return _json(401, {"error": "unauthorized"})
    faults = st.faults
    delay = faults.delay_s()
    if delay:
        await asyncio.sleep(delay)
    if faults.chance(faults.reset_rate):
        st.stats["resets"] += 1
        _abort(request)
    if faults.take_failure():
        st.stats[f"status_{faults.fail_status}"] += 1
        headers = {"Retry-After": faults.retry_after} if faults.retry_after else None
        return _json(faults.fail_status, {"error": "injected failure"}, headers)
    resp = await handler(request)
    st.stats[f"status_{resp.status}"] += 1
    return resp


@web.middleware
async def swallow_drops(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An aborted connection (ours, or the client died mid-request) has nobody to answer; end quietly."""
    try:
        return await handler(request)
    except (_Dropped, ConnectionResetError):
        return web.Response(status=499)


async def post_batch(request: web.Request) -> web.Response:
    """POST /v1/gateways/{gateway_id}/streams/{stream}/batches, admitted within the concurrency limits."""
    st = request.app[STATE]
    gateway_id, stream = request.match_info["gateway_id"], request.match_info["stream"]
    if stream not in STREAMS:
        return _json(404, {"error": f"unknown stream {stream!r}"})
    admission = st.admission
    refused = admission.try_enter(gateway_id)
    if refused is not None:  # answered before the body is even read: refusing must stay cheap
        st.stats[f"refused_{refused}"] += 1
        return _json(429, {"error": f"too many batches in progress ({refused} limit)"},
                     {"Retry-After": str(admission.retry_after()), **admission.headers()})
    started = time.monotonic()
    try:
        resp, rows = await _admitted_batch(request, st, gateway_id, stream)
    finally:
        admission.leave(gateway_id)
    if resp.status in (200, 201):
        admission.observe(rows, time.monotonic() - started)
        resp.headers.update(admission.headers())
    return resp


async def _admitted_batch(
    request: web.Request, st: ReceiverState, gateway_id: str, stream: str
) -> tuple[web.Response, int]:
    """Parse, check and store one admitted batch; returns the answer and the number of rows stored."""
    key = request.headers.get("Idempotency-Key")
    if not key:
        return _json(400, {"error": "Idempotency-Key header is required"}), 0
    raw = await request.read()
    try:
        doc = json.loads(raw)
    except RecursionError:  # "[" × 100 000 must be a 400, not a 500
        return _json(400, {"error": "body is nested too deeply"}), 0
    except (ValueError, UnicodeDecodeError):
        return _json(400, {"error": "body is not (gzip) JSON"}), 0
    problems = check_envelope(doc, gateway_id, stream, key)
    if problems:
        return _json(422, {"error": "invalid batch", "problems": problems}), 0
    items: list[Item] = doc["items"]  # check_envelope: a non-empty list of objects
    columns = telemetry_columns(items) if stream == "telemetry" else None
    problems = check_items(stream, items, columns)
    rejected = st.faults.rejects(stream, int_column([it["seq"] for it in items]))
    problems += [f"seq {s}: rejected by fault injection" for s in rejected]
    if problems:
        return _json(422, {"error": "invalid items", "problems": problems[:50]}), 0
    if st.faults.hold_batches:
        st.sync_hold()
        await st.released.wait()
    if st.faults.store_delay_ms > 0:  # a slow database, as the admission and the size hint see it
        await asyncio.sleep(st.faults.store_delay_ms / 1000.0)
    outcome, response = await store.store_batch(st.db, gateway_id, doc["generation"], stream, key, items, columns,
                                                store.body_hash(raw), st.partitions)
    if outcome == store.CONFLICT:
        st.stats["conflicts"] += 1
        log.warning("gateway %s: conflict on %s: %s", gateway_id, key, response)
        return _json(409, response), 0
    duplicate = outcome == store.DUPLICATE
    inserted = response["inserted"]
    st.stats["rows_inserted"] += inserted if isinstance(inserted, int) else 0
    st.stats["duplicate_batches"] += int(duplicate)
    if st.faults.take_drop():
        st.stats["dropped_after_commit"] += 1
        _abort(request)
    return _json(200 if duplicate else 201, response), len(items)


async def get_marks(request: web.Request) -> web.Response:
    """GET /v1/gateways/{gateway_id}/generations/{generation}/streams: last stored seq per stream."""
    generation = request.match_info["generation"]
    if not GENERATION.match(generation):
        return _json(400, {"error": "generation must be 1-64 characters of [A-Za-z0-9_-]"})
    marks = await store.stream_marks(request.app[STATE].db, request.match_info["gateway_id"], generation, STREAMS)
    return _json(200, {"generation": generation, "streams": {k: {"last_seq": v} for k, v in marks.items()}})


async def get_config(request: web.Request) -> web.Response:
    """GET /v1/gateways/{gateway_id}/config with ETag / If-None-Match."""
    found = await store.get_config(request.app[STATE].db, request.match_info["gateway_id"])
    if found is None:
        return _json(404, {"error": "no config for this gateway"})
    etag, text = found
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(status=200, text=text, content_type="application/json", headers={"ETag": etag})


async def get_pending(request: web.Request) -> web.Response:
    """GET /v1/gateways/{gateway_id}/commands/pending."""
    try:
        limit = max(1, min(500, int(request.query.get("limit", "50"))))
    except ValueError:
        return _json(400, {"error": "limit must be an integer"})
    commands = await store.pending_commands(request.app[STATE].db, request.match_info["gateway_id"], limit)
    return _json(200, {"commands": commands})


async def post_claim(request: web.Request) -> web.Response:
    """POST /v1/gateways/{gateway_id}/commands/{cmd_id}/claim (idempotent for the same gateway)."""
    st = request.app[STATE]
    cmd_id = request.match_info["cmd_id"]
    outcome = await store.claim_command(st.db, request.match_info["gateway_id"], cmd_id)
    if outcome == "unknown":
        return _json(404, {"error": "unknown command"})
    if outcome == "cancelled":
        return _json(409, {"error": "command was cancelled"})
    if st.faults.take_drop():
        st.stats["dropped_after_commit"] += 1
        _abort(request)
    return _json(200, {"cmd_id": cmd_id, "claimed": True, "already_claimed": outcome == "already_claimed"})


def _admin(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if not _authorized(request, request.app[STATE].admin_token):
            return _json(401, {"error": "admin token required"})
        return await handler(request)

    return wrapped


async def admin_put_config(request: web.Request) -> web.Response:
    """PUT /admin/gateways/{gateway_id}/config: publish a new config version (stored as given)."""
    version, etag = await store.put_config(request.app[STATE].db, request.match_info["gateway_id"],
                                           await request.json())
    return _json(200, {"version": version, "etag": etag})


async def admin_post_command(request: web.Request) -> web.Response:
    """POST /admin/gateways/{gateway_id}/commands: queue a command."""
    body = await request.json()
    if not isinstance(body, dict) or not isinstance(body.get("cmd_id"), str):
        return _json(400, {"error": "body must be an object with a cmd_id"})
    try:
        await store.enqueue_command(request.app[STATE].db, request.match_info["gateway_id"], body)
    except asyncpg.UniqueViolationError:
        return _json(409, {"error": "cmd_id exists"})
    return _json(201, {"cmd_id": body["cmd_id"]})


async def admin_get_commands(request: web.Request) -> web.Response:
    """GET /admin/gateways/{gateway_id}/commands: every command and its state."""
    return _json(200, {"commands": await store.list_commands(request.app[STATE].db,
                                                             request.match_info["gateway_id"])})


async def admin_summary(request: web.Request) -> web.Response:
    """GET /admin/gateways/{gateway_id}/streams/{stream}[?count=0]: count and seq range stored."""
    return _json(200, await store.stream_summary(request.app[STATE].db, request.match_info["gateway_id"],
                                                 request.match_info["stream"],
                                                 count=request.query.get("count") != "0"))


async def admin_faults(request: web.Request) -> web.Response:
    """GET/PUT /admin/faults: read or change the fault switches."""
    faults = request.app[STATE].faults
    if request.method == "PUT":
        try:
            faults.update(await request.json())
        except (ValueError, TypeError) as exc:
            return _json(400, {"error": str(exc)})
        request.app[STATE].sync_hold()
    return _json(200, faults.as_dict())


async def admin_stats(request: web.Request) -> web.Response:
    """GET /admin/stats: request counters, batches in progress and the current batch size hint."""
    st = request.app[STATE]
    return _json(200, {**st.stats, "in_flight": st.admission.in_flight, "peak_in_flight": st.admission.peak_in_flight,
                       "hint_rows": st.admission.hint_rows})


async def _open_pool(app: web.Application) -> AsyncIterator[None]:
    st = app[STATE]
    st.pool = await asyncpg.create_pool(st.dsn, min_size=1, max_size=st.pool_size)
    async with st.pool.acquire() as conn:
        await ensure_schema(conn, st.partitions)
    yield
    await st.pool.close()
    st.pool = None


def make_app(
    dsn: str, token: str, *, admin_token: str | None = None, faults: Faults | None = None,
    limits: AdmissionLimits | None = None, pool_size: int = 8,
) -> web.Application:
    """Build the receiver application (the pool opens on startup)."""
    app = web.Application(middlewares=[swallow_drops, gateway_faults], client_max_size=64 * 1024 * 1024)
    app[STATE] = ReceiverState(dsn=dsn, token=token, admin_token=admin_token or token, faults=faults or Faults(),
                               pool_size=pool_size, admission=Admission(limits or AdmissionLimits()))
    app[STATE].sync_hold()
    app.cleanup_ctx.append(_open_pool)
    gw = "/v1/gateways/{gateway_id}"
    app.router.add_post(gw + "/streams/{stream}/batches", post_batch)
    app.router.add_get(gw + "/generations/{generation}/streams", get_marks)
    app.router.add_get(gw + "/config", get_config)
    app.router.add_get(gw + "/commands/pending", get_pending)
    app.router.add_post(gw + "/commands/{cmd_id}/claim", post_claim)
    adm = "/admin/gateways/{gateway_id}"
    app.router.add_put(adm + "/config", _admin(admin_put_config))
    app.router.add_post(adm + "/commands", _admin(admin_post_command))
    app.router.add_get(adm + "/commands", _admin(admin_get_commands))
    app.router.add_get(adm + "/streams/{stream}", _admin(admin_summary))
    app.router.add_route("*", "/admin/faults", _admin(admin_faults))
    app.router.add_get("/admin/stats", _admin(admin_stats))
    return app
