"""The ``commands`` table: one row per command through its lifecycle; every change is queued upstream."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypedDict

import aiosqlite

from gateway.store.db import Database
from sync.outbox import enqueue
from sync.streams import COMMAND_STATUS


class CommandJson(TypedDict):
    """A command as the API shows it and as ``command_status`` sends it (uids, no database ids)."""

    cmd_id: str
    channel: str
    target: str
    cmd: str
    params: dict[str, object]
    source: str
    status: str
    error_code: str | None
    details: dict[str, object]
    created_at: float
    sent_at: float | None
    ack_at: float | None
    finished_at: float | None
    updated_at: float
    zone_uid: str | None
    node_uid: str | None


@dataclass(frozen=True)
class StoredCommand:
    """A command with the database ids the command path checks a node's response against."""

    zone_id: int | None
    node_id: int | None
    record: CommandJson


@dataclass(frozen=True)
class InFlight:
    """A node command sent (or queued) but never answered: what a restart sends again."""

    cmd_id: str
    zone_id: int
    channel: str
    cmd: str
    params: dict[str, object]
    source: str
    node_uid: str


# The one query of a command with its zone and node uids (the API's and the outbox's shape).
_WITH_UIDS = (
    "SELECT c.*, z.uid AS zone_uid, n.uid AS node_uid FROM commands c"
    " LEFT JOIN zones z ON z.id = c.zone_id LEFT JOIN nodes n ON n.id = c.node_id"
)


def _stored(row: aiosqlite.Row) -> StoredCommand:
    params: dict[str, object] = json.loads(row["params"])
    details: dict[str, object] = json.loads(row["details"])
    record = CommandJson(
        cmd_id=str(row["cmd_id"]), channel=str(row["channel"]), target=str(row["target"]), cmd=str(row["cmd"]),
        params=params, source=str(row["source"]), status=str(row["status"]), error_code=row["error_code"],
        details=details, created_at=float(row["created_at"]), sent_at=row["sent_at"], ack_at=row["ack_at"],
        finished_at=row["finished_at"], updated_at=float(row["updated_at"]), zone_uid=row["zone_uid"],
        node_uid=row["node_uid"],
    )
    return StoredCommand(row["zone_id"], row["node_id"], record)


async def get(db: Database, cmd_id: str) -> StoredCommand | None:
    """The command ``cmd_id``, or None."""
    row = await db.fetchone(_WITH_UIDS + " WHERE c.cmd_id=?", (cmd_id,))
    return None if row is None else _stored(row)


async def recent(db: Database, zone_id: int | None = None, limit: int = 50) -> list[CommandJson]:
    """Newest commands first (optionally of one zone)."""
    if zone_id is None:
        rows = await db.fetchall(_WITH_UIDS + " ORDER BY c.id DESC LIMIT ?", (limit,))
    else:
        rows = await db.fetchall(_WITH_UIDS + " WHERE c.zone_id = ? ORDER BY c.id DESC LIMIT ?", (zone_id, limit))
    return [_stored(r).record for r in rows]


async def insert(
    db: Database,
    *,
    cmd_id: str,
    zone_id: int,
    node_id: int | None,
    channel: str,
    target: str,
    cmd: str,
    params: Mapping[str, object],
    source: str,
    now: float,
) -> None:
    """Store a new QUEUED command and queue its status upstream (one transaction)."""
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO commands(cmd_id, zone_id, node_id, channel, target, cmd, params, source, status,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?, 'QUEUED', ?, ?)",
            (cmd_id, zone_id, node_id, channel, target, cmd, json.dumps(dict(params)), source, now, now),
        )
        await _queue(conn, cmd_id, now)


async def advance(
    db: Database,
    cmd_id: str,
    status: str,
    *,
    may_move: Callable[[str], bool],
    at_column: str,
    error_code: str | None,
    details: Mapping[str, object] | None,
    now: float,
) -> bool:
    """Move the command to ``status`` if ``may_move(current status)``, stamping ``at_column``; queue it upstream.

    ``error_code`` None keeps the stored one, ``details`` None the stored details. Returns True when it moved.
    """
    if at_column not in ("sent_at", "ack_at", "finished_at"):
        raise ValueError(f"not a command time column: {at_column!r}")
    async with db.transaction() as conn:
        async with conn.execute("SELECT status FROM commands WHERE cmd_id=?", (cmd_id,)) as cur:
            row = await cur.fetchone()
        if row is None or not may_move(str(row[0])):
            return False
        await conn.execute(
            f"UPDATE commands SET status=?, {at_column}=?, updated_at=?, error_code=COALESCE(?, error_code),"
            " details=CASE WHEN ? IS NULL THEN details ELSE ? END WHERE cmd_id=?",
            (status, now, now, error_code, None if details is None else 1, json.dumps(details or {}), cmd_id),
        )
        await _queue(conn, cmd_id, now)
    return True


async def in_flight(db: Database, since: float) -> list[InFlight]:
    """Node commands QUEUED or SENT since ``since``, oldest first."""
    rows = await db.fetchall(
        "SELECT c.cmd_id, c.zone_id, c.channel, c.cmd, c.params, c.source, n.uid AS node_uid FROM commands c"
        " JOIN nodes n ON n.id = c.node_id WHERE c.target='node' AND c.status IN ('QUEUED','SENT')"
        " AND c.created_at >= ?",
        (since,),
    )
    out = []
    for r in rows:
        params: dict[str, object] = json.loads(r["params"])
        out.append(InFlight(str(r["cmd_id"]), int(r["zone_id"]), str(r["channel"]), str(r["cmd"]), params,
                            str(r["source"]), str(r["node_uid"])))
    return out


async def overdue(db: Database, before: float) -> list[str]:
    """Ids of the open commands (QUEUED, SENT, ACK) sent (or created) before ``before``."""
    rows = await db.fetchall(
        "SELECT cmd_id FROM commands WHERE status IN ('QUEUED','SENT','ACK') AND COALESCE(sent_at, created_at) < ?",
        (before,),
    )
    return [str(r["cmd_id"]) for r in rows]


async def _queue(conn: aiosqlite.Connection, cmd_id: str, now: float) -> None:
    async with conn.execute(_WITH_UIDS + " WHERE c.cmd_id=?", (cmd_id,)) as cur:
        row = await cur.fetchone()
    assert row is not None  # written in this transaction
    await enqueue(conn, COMMAND_STATUS, _stored(row).record, now)
