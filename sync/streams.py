"""The five upstream streams: where their rows live and how a row becomes a wire item."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sync.ports import Database

Item = dict[str, object]
Fetch = Callable[[Database, int, int], Awaitable[list[tuple[int, Item]]]]
Backlog = Callable[[Database, int], Awaitable[tuple[int, float | None]]]
# (seq, item already encoded as JSON text, gateway time of the row)
EncodedRow = tuple[int, str, float | None]
FetchJson = Callable[[Database, int, int], Awaitable[list[EncodedRow]]]
Head = Callable[[Database], Awaitable[int]]

TELEMETRY = "telemetry"
ALERTS = "alerts"
ZONE_EVENTS = "zone_events"
COMMAND_STATUS = "command_status"
NODE_REGISTRATIONS = "node_registrations"
OUTBOX_STREAMS = (ALERTS, ZONE_EVENTS, COMMAND_STATUS, NODE_REGISTRATIONS)


@dataclass(frozen=True)
class StreamSpec:
    """A named stream: ``fetch(db, after_seq, limit)`` returns (seq, item) in sequence order.

    ``fetch_json`` is an optional fast path returning the same items already encoded by SQLite;
    the uplink prefers it (it is 5x cheaper per row than building dicts and json-encoding them in Python).
    """

    name: str
    fetch: Fetch
    backlog: Backlog
    default_max_rows: int
    fetch_json: FetchJson | None = None
    head: Head | None = None  # the highest sequence the stream has locally (0 if empty)


_TELEMETRY_SQL = (
    "SELECT t.id, z.uid, n.uid, t.metric_type, t.channel, t.value, t.ts, t.received_at,"
    " t.ts_source, t.clock_synced, t.raw"
    " FROM telemetry_samples t"
    " LEFT JOIN zones z ON z.id = t.zone_id"
    " LEFT JOIN nodes n ON n.id = t.node_id"
    " WHERE t.id > ? ORDER BY t.id LIMIT ?"
)


async def fetch_telemetry(db: Database, after_seq: int, limit: int) -> list[tuple[int, Item]]:
    """Telemetry samples after ``after_seq`` with zone/node ids resolved to uids."""
    rows = await db.fetchall(_TELEMETRY_SQL, (after_seq, limit))
    out: list[tuple[int, Item]] = []
    for seq, zone_uid, node_uid, metric, channel, value, ts, received_at, ts_source, synced, raw in rows:
        # JSON has no NaN/inf; a non-finite value goes up as null and the receiver rejects just that row.
        finite = value if value is not None and math.isfinite(value) else None
        out.append(
            (
                seq,
                {
                    "seq": seq,
                    "zone_uid": zone_uid,
                    "node_uid": node_uid,
                    "metric_type": metric,
                    "channel": channel,
                    "value": finite,
                    "ts": ts,
                    "received_at": received_at,
                    "ts_source": ts_source,
                    "clock_synced": bool(synced),
                    "raw": raw,
                },
            )
        )
    return out


# Same items as fetch_telemetry, built by SQLite's json_object. Non-finite values become null (the
# receiver rejects that row alone); SQLite prints REAL with 15 significant digits (10 us on a unix ts).
_TELEMETRY_JSON_SQL = (
    "SELECT t.id, json_object('seq', t.id, 'zone_uid', z.uid, 'node_uid', n.uid, 'metric_type', t.metric_type,"
    " 'channel', t.channel,"
    " 'value', CASE WHEN t.value BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308 THEN t.value END,"
    " 'ts', t.ts, 'received_at', t.received_at, 'ts_source', t.ts_source,"
    " 'clock_synced', json(CASE WHEN t.clock_synced THEN 'true' ELSE 'false' END), 'raw', t.raw),"
    " t.received_at"
    " FROM telemetry_samples t"
    " LEFT JOIN zones z ON z.id = t.zone_id"
    " LEFT JOIN nodes n ON n.id = t.node_id"
    " WHERE t.id > ? ORDER BY t.id LIMIT ?"
)


async def fetch_telemetry_json(db: Database, after_seq: int, limit: int) -> list[EncodedRow]:
    """Telemetry items after ``after_seq`` encoded by SQLite."""
    rows = await db.fetchall(_TELEMETRY_JSON_SQL, (after_seq, limit))
    return [(int(r[0]), str(r[1]), r[2]) for r in rows]


async def telemetry_backlog(db: Database, after_seq: int) -> tuple[int, float | None]:
    """Unsynced sample count and the gateway receive time of the oldest one.

    The count is ``MAX(id) - cursor``: O(1) on a million-row backlog, exact because ids are dense,
    except that it still includes a range dropped by the byte budget until the cursor passes it.
    """
    head = await db.fetchone("SELECT MAX(id) FROM telemetry_samples")
    oldest = await db.fetchone(
        "SELECT received_at FROM telemetry_samples WHERE id > ? ORDER BY id LIMIT 1", (after_seq,)
    )
    if oldest is None or head is None or head[0] is None:
        return 0, None
    return max(0, int(head[0]) - after_seq), float(oldest[0])


async def telemetry_head(db: Database) -> int:
    """Highest telemetry sequence in the file (rowid: O(1))."""
    row = await db.fetchone("SELECT MAX(id) FROM telemetry_samples")
    return int(row[0]) if row is not None and row[0] is not None else 0


def outbox_stream(name: str, default_max_rows: int = 500) -> StreamSpec:
    """A stream stored as ``sync_outbox`` rows whose ``body`` is the JSON object to send."""

    async def fetch(db: Database, after_seq: int, limit: int) -> list[tuple[int, Item]]:
        rows = await db.fetchall(
            "SELECT id, body, created_at FROM sync_outbox WHERE stream = ? AND id > ? ORDER BY id LIMIT ?",
            (name, after_seq, limit),
        )
        return [(seq, {"seq": seq, "created_at": created, "data": _body(body)}) for seq, body, created in rows]

    async def backlog(db: Database, after_seq: int) -> tuple[int, float | None]:
        row = await db.fetchone(
            "SELECT COUNT(*), MIN(created_at) FROM sync_outbox WHERE stream = ? AND id > ?", (name, after_seq)
        )
        if row is None:
            return 0, None
        return int(row[0]), (float(row[1]) if row[1] is not None else None)

    async def head(db: Database) -> int:
        row = await db.fetchone("SELECT MAX(id) FROM sync_outbox WHERE stream = ?", (name,))
        return int(row[0]) if row is not None and row[0] is not None else 0

    return StreamSpec(name=name, fetch=fetch, backlog=backlog, default_max_rows=default_max_rows, head=head)


def _body(text: str) -> object:
    """Decode an outbox body; a corrupt one is sent as a string so the receiver can reject just that row."""
    try:
        return json.loads(text)
    except ValueError:
        return text


TELEMETRY_SPEC = StreamSpec(
    name=TELEMETRY, fetch=fetch_telemetry, backlog=telemetry_backlog, default_max_rows=2000,
    fetch_json=fetch_telemetry_json, head=telemetry_head,
)
ALL_STREAMS: tuple[StreamSpec, ...] = (TELEMETRY_SPEC, *(outbox_stream(n) for n in OUTBOX_STREAMS))
STREAM_NAMES = tuple(s.name for s in ALL_STREAMS)
