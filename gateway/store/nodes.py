"""The node registry's tables: ``zones``, ``nodes`` and ``node_sequences`` (the per-node message identity)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import aiosqlite

from gateway.store.db import Database
from sync.outbox import enqueue
from sync.streams import NODE_REGISTRATIONS


@dataclass(frozen=True)
class ZoneRow:
    """One zone as the pages list it."""

    id: int
    uid: str
    name: str


@dataclass(frozen=True)
class NodeRow:
    """One ``nodes`` row with its zone's uid."""

    id: int
    uid: str
    hardware_id: str
    node_type: str
    firmware_version: str | None
    hardware_revision: str | None
    zone_id: int | None
    zone_uid: str | None
    lifecycle_state: str
    validated: bool
    online: bool
    first_seen_at: float | None
    last_seen_at: float | None
    rssi: int | None
    uptime_s: int | None
    free_heap: int | None
    transport: str


@dataclass(frozen=True)
class NodeAssignment:
    """Where the config puts a node (by hardware id)."""

    hardware_id: str
    zone_id: int | None
    lifecycle_state: str


@dataclass(frozen=True)
class NodeWrite:
    """The columns a node_hello sets; the hello's own values are stored as the node sent them."""

    uid: str
    hardware_id: str
    node_type: str
    firmware_version: object
    hardware_revision: object
    zone_id: int | None
    lifecycle_state: str
    hello: Mapping[str, object]


class SeqMark(NamedTuple):
    """One ``node_sequences`` row: a node's committed message identity (``holes`` is the JSON text). The writer
    stores it in the group commit (the tuple is its parameter row); ``sequences`` reads it back at start."""

    node_id: int
    boot: str
    high: int
    holes: str
    gaps: int
    duplicates: int
    updated_at: float


_NODES_SQL = "SELECT n.*, z.uid AS zone_uid FROM nodes n LEFT JOIN zones z ON z.id = n.zone_id"


def _node(row: aiosqlite.Row) -> NodeRow:
    return NodeRow(
        id=int(row["id"]),
        uid=str(row["uid"]),
        hardware_id=str(row["hardware_id"]),
        node_type=str(row["node_type"]),
        firmware_version=row["firmware_version"],
        hardware_revision=row["hardware_revision"],
        zone_id=row["zone_id"],
        zone_uid=row["zone_uid"],
        lifecycle_state=str(row["lifecycle_state"]),
        validated=bool(row["validated"]),
        online=bool(row["online"]),
        first_seen_at=row["first_seen_at"],
        last_seen_at=row["last_seen_at"],
        rssi=row["rssi"],
        uptime_s=row["uptime_s"],
        free_heap=row["free_heap"],
        transport=str(row["transport"]),
    )


# ---- zones ---------------------------------------------------------------------------------------
async def upsert_zones(db: Database, zones: Sequence[tuple[str, str, Mapping[str, object]]], now: float) -> None:
    """Create or rename zones, one transaction; each item is (uid, name, settings)."""
    async with db.transaction() as conn:
        for uid, name, settings in zones:
            await conn.execute(
                "INSERT INTO zones(uid, name, settings, created_at) VALUES (?,?,?,?)"
                " ON CONFLICT(uid) DO UPDATE SET name=excluded.name, settings=excluded.settings",
                (uid, name, json.dumps(settings), now),
            )


async def zone_ids(db: Database) -> dict[str, int]:
    """``{zone uid: zone id}`` of every stored zone."""
    return {str(r["uid"]): int(r["id"]) for r in await db.fetchall("SELECT id, uid FROM zones")}


async def zone_id(db: Database, uid: str) -> int | None:
    """The id of the zone ``uid``, or None."""
    row = await db.fetchone("SELECT id FROM zones WHERE uid=?", (uid,))
    return None if row is None else int(row["id"])


async def zones(db: Database) -> list[ZoneRow]:
    """Every zone, in id order."""
    rows = await db.fetchall("SELECT id, uid, name FROM zones ORDER BY id")
    return [ZoneRow(int(r["id"]), str(r["uid"]), str(r["name"])) for r in rows]


async def zone_uid(conn: aiosqlite.Connection, zone_id: int | None) -> str | None:
    """The uid of a zone id, read inside the caller's transaction (None for no zone)."""
    if zone_id is None:
        return None
    async with conn.execute("SELECT uid FROM zones WHERE id=?", (zone_id,)) as cur:
        row = await cur.fetchone()
    return str(row[0]) if row else None


# ---- nodes ---------------------------------------------------------------------------------------
async def assign_nodes(db: Database, assignments: Sequence[NodeAssignment], now: float) -> None:
    """Apply the config's zone assignments to the nodes already known (one transaction)."""
    async with db.transaction() as conn:
        for a in assignments:
            await conn.execute(
                "UPDATE nodes SET zone_id=?, validated=?, lifecycle_state=?, updated_at=? WHERE hardware_id=?",
                (a.zone_id, int(a.zone_id is not None), a.lifecycle_state, now, a.hardware_id),
            )


async def nodes(db: Database, *, by_zone: bool = False) -> list[NodeRow]:
    """Every node with its zone uid (ordered by zone id then uid when ``by_zone``)."""
    sql = _NODES_SQL + (" ORDER BY z.id, n.uid" if by_zone else "")
    return [_node(r) for r in await db.fetchall(sql)]


async def node_by_hardware(db: Database, hardware_id: str) -> NodeRow | None:
    """The node with this hardware id, or None."""
    row = await db.fetchone(_NODES_SQL + " WHERE n.hardware_id=?", (hardware_id,))
    return None if row is None else _node(row)


async def hardware_of(db: Database, uid: str) -> str | None:
    """The hardware id holding the node uid ``uid``, or None."""
    row = await db.fetchone("SELECT hardware_id FROM nodes WHERE uid=?", (uid,))
    return None if row is None else str(row["hardware_id"])


async def write_node(db: Database, node: NodeWrite, *, new: bool, zone_uid: str | None, now: float) -> None:
    """Insert (``new``) or update a node from its hello, and queue its registration upstream (one transaction)."""
    fields = (
        node.uid, node.node_type, node.firmware_version, node.hardware_revision, node.zone_id, node.lifecycle_state,
        int(node.zone_id is not None), now, json.dumps(node.hello), now,
    )
    async with db.transaction() as conn:
        if new:
            await conn.execute(
                "INSERT INTO nodes(uid, node_type, firmware_version, hardware_revision, zone_id, lifecycle_state,"
                " validated, last_seen_at, hello, updated_at, hardware_id, first_seen_at, online)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,1)",
                (*fields, node.hardware_id, now),
            )
        else:
            await conn.execute(
                "UPDATE nodes SET uid=?, node_type=?, firmware_version=?, hardware_revision=?, zone_id=?,"
                " lifecycle_state=?, validated=?, last_seen_at=?, hello=?, updated_at=?, online=1"
                " WHERE hardware_id=?",
                (*fields, node.hardware_id),
            )
        await enqueue(conn, NODE_REGISTRATIONS, {
            "node_uid": node.uid,
            "hardware_id": node.hardware_id,
            "node_type": node.hello.get("node_type"),
            "firmware_version": node.firmware_version,
            "hardware_revision": node.hardware_revision,
            "zone_uid": zone_uid,
            "lifecycle_state": node.lifecycle_state,
            "seen_at": now,
            "first_registration": new,
        }, now)


async def record_heartbeat(
    db: Database, node_id: int, rssi: object, uptime_s: object, free_heap: object, now: float
) -> None:
    """Store a heartbeat's health fields (as the node sent them)."""
    await db.execute(
        "UPDATE nodes SET last_seen_at=?, rssi=?, uptime_s=?, free_heap=?, updated_at=? WHERE id=?",
        (now, rssi, uptime_s, free_heap, now, node_id),
    )


async def set_online(db: Database, node_id: int, online: bool, now: float) -> None:
    """Record a node going online or offline."""
    await db.execute("UPDATE nodes SET online=?, updated_at=? WHERE id=?", (int(online), now, node_id))


# ---- node_sequences ------------------------------------------------------------------------------
async def sequences(db: Database) -> list[SeqMark]:
    """The committed message identity of every node that sends one."""
    rows = await db.fetchall("SELECT node_id, boot, high, holes, gaps, duplicates, updated_at FROM node_sequences")
    return [SeqMark(int(r[0]), str(r[1]), int(r[2]), str(r[3] or ""), int(r[4]), int(r[5]), float(r[6]))
            for r in rows]
