"""Reads of the telemetry tables outside the hot write path (``gateway/writer.py`` owns the writes): the newest
readings (``telemetry_last``) and a bulk insert of simulated samples."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.store.db import Database


@dataclass(frozen=True)
class LatestRow:
    """The newest reading of one (zone, node, metric) in ``telemetry_last``, with the zone and node uids."""

    zone_id: int
    zone_uid: str | None  # None: the zone row is gone
    node_id: int
    node_uid: str | None
    metric_type: str
    channel: str | None
    value: float
    ts: float
    received_at: float


@dataclass(frozen=True)
class LatestValue:
    """One reading and when it was received (wall seconds)."""

    value: float
    received_at: float


async def latest(db: Database) -> list[LatestRow]:
    """Every row of ``telemetry_last``."""
    rows = await db.fetchall(
        "SELECT t.zone_id, z.uid AS zone_uid, t.node_id, n.uid AS node_uid, t.metric_type, t.channel, t.value,"
        " t.ts, t.received_at FROM telemetry_last t LEFT JOIN zones z ON z.id = t.zone_id"
        " LEFT JOIN nodes n ON n.id = t.node_id"
    )
    return [
        LatestRow(int(r[0]), r[1], int(r[2]), r[3], str(r[4]), r[5], float(r[6]), float(r[7]), float(r[8]))
        for r in rows
    ]


async def newest_of_zone(db: Database, zone_id: int, metric_type: str) -> LatestValue | None:
    """The zone's most recently received value of one metric (any node), or None."""
    row = await db.fetchone(
        "SELECT value, received_at FROM telemetry_last WHERE zone_id=? AND metric_type=?"
        " ORDER BY received_at DESC LIMIT 1", (zone_id, metric_type))
    return None if row is None else LatestValue(float(row["value"]), float(row["received_at"]))


async def has_samples_before(db: Database, ts: float) -> bool:
    """True when ``telemetry_samples`` holds a reading older than ``ts``."""
    return await db.fetchone("SELECT 1 FROM telemetry_samples WHERE ts < ? LIMIT 1", (ts,)) is not None


# (zone_id, node_id, metric_type, channel, value, ts, received_at, ts_source, clock_synced, raw)
SampleValues = tuple[int, int, str, str | None, float, float, float, str, int, str | None]


def insert_samples(conn: sqlite3.Connection, samples: Iterable[SampleValues]) -> None:
    """Bulk-insert samples on a plain sqlite3 connection (the demo's simulated past, in one thread transaction)."""
    conn.executemany(
        "INSERT INTO telemetry_samples(zone_id, node_id, metric_type, channel, value, ts, received_at, ts_source,"
        " clock_synced, raw) VALUES (?,?,?,?,?,?,?,?,?,?)",
        samples,
    )
