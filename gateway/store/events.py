"""The ``zone_events`` table (what happened in a zone, for people and upstream), and the telemetry gap record."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import TypedDict

import aiosqlite

from gateway.store.db import Database
from gateway.store.nodes import zone_uid
from sync.outbox import enqueue
from sync.streams import TELEMETRY, ZONE_EVENTS


class EventJson(TypedDict):
    """One zone event, JSON-ready (details decoded)."""

    id: int
    zone_id: int | None
    type: str
    details: dict[str, object]
    created_at: float


def _event(row: aiosqlite.Row) -> EventJson:
    details: dict[str, object] = json.loads(row["details"])
    return EventJson(id=int(row["id"]), zone_id=row["zone_id"], type=str(row["type"]), details=details,
                     created_at=float(row["created_at"]))


async def _insert(conn: aiosqlite.Connection, zone_id: int | None, type_: str, details: Mapping[str, object],
                  now: float) -> int:
    """The event row and its outbox row (same body shape for every writer), inside the caller's transaction."""
    cur = await conn.execute(
        "INSERT INTO zone_events(zone_id, type, details, created_at) VALUES (?,?,?,?)",
        (zone_id, type_, json.dumps(details, default=str), now),
    )
    event_id = int(cur.lastrowid or 0)
    body = {"event_id": event_id, "zone_uid": await zone_uid(conn, zone_id), "type": type_, "details": details,
            "created_at": now}
    await enqueue(conn, ZONE_EVENTS, body, now)
    return event_id


async def record(db: Database, zone_id: int | None, type_: str, details: Mapping[str, object], now: float) -> int:
    """Append a zone event and queue it upstream (one transaction); returns its id."""
    async with db.transaction() as conn:
        return await _insert(conn, zone_id, type_, details, now)


async def recent(db: Database, zone_id: int | None = None, limit: int = 100) -> list[EventJson]:
    """Newest events first (of every zone when ``zone_id`` is None)."""
    if zone_id is None:
        rows = await db.fetchall("SELECT * FROM zone_events ORDER BY id DESC LIMIT ?", (limit,))
    else:
        rows = await db.fetchall("SELECT * FROM zone_events WHERE zone_id=? ORDER BY id DESC LIMIT ?", (zone_id, limit))
    return [_event(r) for r in rows]


async def of_types(db: Database, zone_id: int, types: Sequence[str], limit: int) -> list[EventJson]:
    """The zone's newest events of the given types."""
    placeholders = ",".join("?" * len(types))
    rows = await db.fetchall(
        f"SELECT * FROM zone_events WHERE zone_id=? AND type IN ({placeholders}) ORDER BY id DESC LIMIT ?",
        (zone_id, *types, limit),
    )
    return [_event(r) for r in rows]


async def since(db: Database, zone_id: int, type_: str, start: float) -> list[EventJson]:
    """The zone's events of one type created at or after ``start``, oldest first."""
    rows = await db.fetchall(
        "SELECT * FROM zone_events WHERE zone_id = ? AND type = ? AND created_at >= ? ORDER BY id",
        (zone_id, type_, start),
    )
    return [_event(r) for r in rows]


async def record_disk_full_gap(db: Database, first_ts: float, last_ts: float, waiting: int, now: float) -> None:
    """Record the window the disk was full as a telemetry gap: a ``sync_gaps`` row and a TELEMETRY_GAP event.

    No stored sample was lost (nothing gets an id before its commit): the gap sits at the newest sample id;
    what the nodes could not buffer meanwhile is missing upstream.
    """
    async with db.transaction() as conn:
        async with conn.execute("SELECT IFNULL(MAX(id), 0) FROM telemetry_samples") as cur:
            row = await cur.fetchone()
        seq = int(row[0]) if row else 0
        details = {"stream": TELEMETRY, "count": 0, "first_seq": seq, "last_seq": seq, "first_ts": first_ts,
                   "last_ts": last_ts, "reason": "disk_full", "waiting_samples_at_recovery": waiting}
        await conn.execute(
            "INSERT INTO sync_gaps (stream, first_seq, last_seq, count, first_ts, last_ts, reason,"
            " created_at) VALUES (?, ?, ?, 0, ?, ?, 'disk_full', ?)",
            (TELEMETRY, seq, seq, first_ts, last_ts, now),
        )
        await _insert(conn, None, "TELEMETRY_GAP", details, now)


# (zone_id, type, details JSON, created_at)
EventValues = tuple[int | None, str, str, float]


def insert_unsynced(conn: sqlite3.Connection, events: Iterable[EventValues]) -> None:
    """Bulk-insert events that do NOT go upstream (the demo's simulated past) on a plain sqlite3 connection."""
    conn.executemany("INSERT INTO zone_events(zone_id, type, details, created_at) VALUES (?,?,?,?)", events)
