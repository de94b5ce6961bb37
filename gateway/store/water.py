"""Water usage: ``water_usage_logs`` (one row per pump run) and its daily rollup ``water_usage_daily``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiosqlite

from gateway.store.db import Database

# (zone_id, pump_channel, volume_l, duration_ms, avg_flow_l_min, details JSON, started_at, finished_at)
RunValues = tuple[int, str, float, int, float | None, str, float, float]

_INSERT_RUN = (
    "INSERT INTO water_usage_logs(zone_id, pump_channel, volume_l, duration_ms, avg_flow_l_min, details,"
    " started_at, finished_at) VALUES (?,?,?,?,?,?,?,?)"
)


@dataclass(frozen=True)
class NewRun:
    """A logged run the daily rollup has not seen yet."""

    id: int
    zone_id: int
    started_at: float
    finished_at: float


@dataclass(frozen=True)
class RunRow:
    """A logged run as the rollup and the activity strip read it; ``details`` is the stored JSON text."""

    zone_id: int
    pump_channel: str
    started_at: float
    finished_at: float
    volume_l: float
    details: str | None


async def log_run(
    db: Database, zone_id: int, pump_channel: str, volume_l: float, duration_ms: int, avg_flow_l_min: float | None,
    details: Mapping[str, object], started_at: float, finished_at: float,
) -> None:
    """Record one finished pump run."""
    await db.execute(_INSERT_RUN, (zone_id, pump_channel, volume_l, duration_ms, avg_flow_l_min, json.dumps(details),
                                   started_at, finished_at))


def insert_runs(conn: sqlite3.Connection, runs: Iterable[RunValues]) -> None:
    """Bulk-insert runs on a plain sqlite3 connection (the demo's simulated past, in one thread transaction)."""
    conn.executemany(_INSERT_RUN, runs)


async def runs_after(db: Database, last_id: int) -> list[NewRun]:
    """Runs logged with an id above ``last_id``, in id order."""
    rows = await db.fetchall(
        "SELECT id, zone_id, started_at, finished_at FROM water_usage_logs WHERE id > ? ORDER BY id", (last_id,))
    return [NewRun(int(r["id"]), int(r["zone_id"]), float(r["started_at"]), float(r["finished_at"])) for r in rows]


async def runs_started(conn: aiosqlite.Connection, zone_id: int, start: float, end: float) -> list[RunRow]:
    """The zone's runs that started in [start, end), read inside the caller's transaction."""
    async with conn.execute(
        "SELECT zone_id, pump_channel, started_at, finished_at, volume_l, details FROM water_usage_logs"
        " WHERE zone_id=? AND started_at >= ? AND started_at < ?",
        (zone_id, start, end)) as cur:
        return [_run(r) for r in await cur.fetchall()]


async def runs_finished_since(db: Database, zone_id: int, since: float) -> list[RunRow]:
    """The zone's runs that finished at or after ``since``, by start time."""
    rows = await db.fetchall(
        "SELECT zone_id, pump_channel, started_at, finished_at, volume_l, details FROM water_usage_logs"
        " WHERE zone_id = ? AND finished_at >= ? ORDER BY started_at",
        (zone_id, since),
    )
    return [_run(r) for r in rows]


async def put_daily(conn: aiosqlite.Connection, day: str, zone_id: int, total_volume_l: float,
                    irrigation_count: int) -> None:
    """Write (or replace) one zone's usage of one local date (``YYYY-MM-DD``)."""
    await conn.execute(
        "INSERT OR REPLACE INTO water_usage_daily(date, zone_id, total_volume_l, irrigation_count) VALUES (?,?,?,?)",
        (day, zone_id, total_volume_l, irrigation_count))


def _run(r: aiosqlite.Row) -> RunRow:
    return RunRow(int(r["zone_id"]), str(r["pump_channel"]), float(r["started_at"]), float(r["finished_at"]),
                  float(r["volume_l"]), r["details"])
