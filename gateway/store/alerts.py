"""The ``alerts`` table: one ACTIVE row per (zone, code, scope), repeats bump it; every change is queued upstream."""

from __future__ import annotations

import json
from typing import NotRequired, TypedDict

import aiosqlite

from gateway.store.db import Database
from gateway.store.nodes import zone_uid
from sync.outbox import enqueue
from sync.streams import ALERTS


class AlertJson(TypedDict):
    """One alert, JSON-ready (an ``alerts`` row with its details decoded); ``stored`` is False while in memory."""

    id: int
    source: str
    code: str
    type: str
    severity: str
    zone_id: int | None
    scope: str
    details: dict[str, object]
    status: str
    count: int
    created_at: float
    last_seen_at: float
    resolved_at: float | None
    resolved_by: str | None
    stored: NotRequired[bool]


class AlertBody(AlertJson):
    """What an alert change sends upstream: the row plus its zone's uid."""

    zone_uid: str | None


def _alert(row: aiosqlite.Row) -> AlertJson:
    details: dict[str, object] = json.loads(row["details"])
    return AlertJson(
        id=int(row["id"]), source=str(row["source"]), code=str(row["code"]), type=str(row["type"]),
        severity=str(row["severity"]), zone_id=row["zone_id"], scope=str(row["scope"]), details=details,
        status=str(row["status"]), count=int(row["count"]), created_at=float(row["created_at"]),
        last_seen_at=float(row["last_seen_at"]), resolved_at=row["resolved_at"], resolved_by=row["resolved_by"],
    )


async def store_alert(
    db: Database,
    *,
    code: str,
    source: str,
    text: str,
    severity: str,
    zone_id: int | None,
    scope: str,
    details: str,
    count: int,
    first_at: float,
    now: float,
) -> tuple[int, bool]:
    """Bump the ACTIVE alert by ``count`` or create it; returns (id, created). ``details`` is JSON text."""
    async with db.transaction() as conn:
        async with conn.execute(
            "SELECT id FROM alerts WHERE status='ACTIVE' AND IFNULL(zone_id,-1)=IFNULL(?,-1) AND code=? AND scope=?",
            (zone_id, code, scope),
        ) as cur:
            existing = await cur.fetchone()
        if existing is not None:
            await conn.execute(
                "UPDATE alerts SET count=count+?, last_seen_at=?, details=? WHERE id=?",
                (count, now, details, existing[0]),
            )
            return int(existing[0]), False
        cur2 = await conn.execute(
            "INSERT INTO alerts(source, code, type, severity, zone_id, scope, details, status, count,"
            " created_at, last_seen_at) VALUES (?,?,?,?,?,?,?,'ACTIVE',?,?,?)",
            (source, code, text, severity, zone_id, scope, details, count, first_at, now),
        )
        alert_id = int(cur2.lastrowid or 0)
        await _queue(conn, alert_id, now)
    return alert_id, True


async def resolve(db: Database, code: str, zone_id: int | None, scope: str | None, by: str, now: float) -> int:
    """Resolve the ACTIVE alerts matching (zone, code[, scope]) and queue each upstream; returns how many."""
    sql = "SELECT id FROM alerts WHERE status='ACTIVE' AND IFNULL(zone_id,-1)=IFNULL(?,-1) AND code=?"
    params: tuple[int | str | None, ...] = (zone_id, code)
    if scope is not None:
        sql += " AND scope=?"
        params += (scope,)
    async with db.transaction() as conn:
        async with conn.execute(sql, params) as cur:
            ids = [int(r[0]) for r in await cur.fetchall()]
        for alert_id in ids:
            await conn.execute(
                "UPDATE alerts SET status='RESOLVED', resolved_at=?, resolved_by=? WHERE id=?", (now, by, alert_id)
            )
            await _queue(conn, alert_id, now)
    return len(ids)


async def active(db: Database, zone_id: int | None = None, *, any_zone: bool = True) -> list[AlertJson]:
    """ACTIVE alerts, newest first: all of them (``any_zone`` and no zone) or those of one zone (None: no zone)."""
    if any_zone and zone_id is None:
        rows = await db.fetchall("SELECT * FROM alerts WHERE status='ACTIVE' ORDER BY last_seen_at DESC")
    else:
        rows = await db.fetchall(
            "SELECT * FROM alerts WHERE status='ACTIVE' AND IFNULL(zone_id,-1)=IFNULL(?,-1)"
            " ORDER BY last_seen_at DESC",
            (zone_id,),
        )
    return [_alert(r) for r in rows]


async def is_active(db: Database, zone_id: int, code: str, scope: str) -> bool:
    """True while the alert (zone, code, scope) is ACTIVE."""
    row = await db.fetchone(
        "SELECT 1 FROM alerts WHERE status='ACTIVE' AND zone_id=? AND code=? AND scope=?", (zone_id, code, scope)
    )
    return row is not None


async def recent(db: Database, limit: int) -> list[AlertJson]:
    """The ``limit`` newest alerts of any status."""
    return [_alert(r) for r in await db.fetchall("SELECT * FROM alerts ORDER BY id DESC LIMIT ?", (limit,))]


async def _queue(conn: aiosqlite.Connection, alert_id: int, now: float) -> None:
    async with conn.execute("SELECT * FROM alerts WHERE id=?", (alert_id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        return
    body = AlertBody(**_alert(row), zone_uid=await zone_uid(conn, row["zone_id"]))
    await enqueue(conn, ALERTS, body, now)
