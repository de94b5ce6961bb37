"""The ``commands`` table: one row per command through its lifecycle; every change is queued upstream."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import aiosqlite

from gateway.store.db import Database
from sync.outbox import enqueue, enqueue_in_thread
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


def new_record(
    *,
    cmd_id: str,
    zone_uid: str,
    node_uid: str | None,
    channel: str,
    target: str,
    cmd: str,
    params: Mapping[str, object],
    source: str,
    now: float,
) -> CommandJson:
    """A QUEUED command as it will be stored, built in memory (the caller knows the uids from the registry)."""
    return CommandJson(
        cmd_id=cmd_id, channel=channel, target=target, cmd=cmd, params=dict(params), source=source, status="QUEUED",
        error_code=None, details={}, created_at=now, sent_at=None, ack_at=None, finished_at=None, updated_at=now,
        zone_uid=zone_uid, node_uid=node_uid,
    )


_INSERT = (
    "INSERT INTO commands(cmd_id, zone_id, node_id, channel, target, cmd, params, source, status, error_code,"
    " details, created_at, sent_at, ack_at, finished_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _insert_params(record: CommandJson, zone_id: int, node_id: int | None) -> tuple[object, ...]:
    r = record
    return (r["cmd_id"], zone_id, node_id, r["channel"], r["target"], r["cmd"], json.dumps(r["params"]), r["source"],
            r["status"], r["error_code"], json.dumps(r["details"]), r["created_at"], r["sent_at"], r["ack_at"],
            r["finished_at"], r["updated_at"])


async def insert(db: Database, record: CommandJson, *, zone_id: int, node_id: int | None) -> None:
    """Store a new QUEUED command and queue its status upstream (one transaction).

    A node command is stored this way before anything is published: the node may answer before the publish
    returns, and its answer must find the command.
    """
    async with db.transaction() as conn:
        await conn.execute(_INSERT, _insert_params(record, zone_id, node_id))
        await enqueue(conn, COMMAND_STATUS, record, record["updated_at"])


async def insert_finished(
    db: Database, states: Sequence[CommandJson], *, zone_id: int, node_id: int | None
) -> None:
    """Store a command whose outcome is already known (a gateway relay) in its last state, with one
    ``command_status`` outbox row per state it went through (QUEUED, SENT, DONE …): the same rows as when
    each state was written on its own, in ONE transaction and one trip to the database thread."""
    final = states[-1]

    def write(conn: sqlite3.Connection) -> None:
        conn.execute(_INSERT, _insert_params(final, zone_id, node_id))
        for state in states:
            enqueue_in_thread(conn, COMMAND_STATUS, state, state["updated_at"])

    await db.in_thread_transaction(write)


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
) -> CommandJson | None:
    """Move the command to ``status`` if ``may_move(current status)``, stamping ``at_column``; queue it upstream.

    ``error_code`` None keeps the stored one, ``details`` None the stored details. Returns the command as it
    now is when it moved (built from the row read in the same transaction), None when it did not.
    """
    if at_column not in ("sent_at", "ack_at", "finished_at"):
        raise ValueError(f"not a command time column: {at_column!r}")
    async with db.transaction() as conn:
        async with conn.execute(_WITH_UIDS + " WHERE c.cmd_id=?", (cmd_id,)) as cur:
            row = await cur.fetchone()
        if row is None or not may_move(str(row["status"])):
            return None
        await conn.execute(
            f"UPDATE commands SET status=?, {at_column}=?, updated_at=?, error_code=COALESCE(?, error_code),"
            " details=CASE WHEN ? IS NULL THEN details ELSE ? END WHERE cmd_id=?",
            (status, now, now, error_code, None if details is None else 1, json.dumps(details or {}), cmd_id),
        )
        record = _stored(row).record  # the UPDATE above, applied in memory
        record["status"] = status
        if at_column == "sent_at":
            record["sent_at"] = now
        elif at_column == "ack_at":
            record["ack_at"] = now
        else:
            record["finished_at"] = now
        record["updated_at"] = now
        if error_code is not None:
            record["error_code"] = error_code
        if details is not None:
            record["details"] = dict(details)
        await enqueue(conn, COMMAND_STATUS, record, now)
    return record


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
