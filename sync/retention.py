"""Bounded disk: prune synced rows past retention, keep the database under a byte budget.

Age-based pruning keeps samples the local aggregator has not folded in yet. Order of sacrifice when over
budget: synced telemetry (any age), synced outbox rows, and only then
the oldest *unsynced* telemetry, each dropped range recorded in ``sync_gaps`` and as a
``TELEMETRY_GAP`` zone event (local ``zone_events`` row + ``zone_events`` outbox row, sent upstream).
Deletes are chunked (one short transaction each) so ingest keeps going.
The newest row of each table is never deleted: without AUTOINCREMENT SQLite would hand out its id again
after it is gone, and a reused id below a cursor would never be sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from enum import Enum

from sync.outbox import cursor_positions, enqueue
from sync.ports import Clock, Database, SystemClock
from sync.storage_errors import storage_error_text
from sync.streams import OUTBOX_STREAMS, TELEMETRY, ZONE_EVENTS

log = logging.getLogger(__name__)

DAY_S = 86_400.0


class DiskLevel(Enum):
    """Database size relative to the byte budget."""

    OK = "ok"
    HIGH = "high"  # >= warn fraction (80 %)
    CRITICAL = "critical"  # >= critical fraction (95 %)


OnDiskLevel = Callable[[DiskLevel, int, int], Awaitable[None]]
OnStorageError = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class RetentionSettings:
    """Retention age, byte budget and pacing."""

    retention_days: float = 30.0
    budget_bytes: int | None = None  # None: no budget, only age-based pruning
    interval_s: float = 300.0
    retry_after_error_s: float = 30.0
    chunk_rows: int = 5000
    drop_chunk_rows: int = 20_000
    warn_fraction: float = 0.80
    critical_fraction: float = 0.95
    target_fraction: float = 0.90  # when over budget, free space down to this
    hysteresis: float = 0.02


@dataclass
class RetentionReport:
    """What one pass did."""

    pruned_samples: int = 0
    pruned_outbox: int = 0
    pruned_dead_letters: int = 0
    pressure_samples: int = 0
    pressure_outbox: int = 0
    dropped_unsynced: int = 0
    used_bytes: int = 0
    level: str = DiskLevel.OK.value
    error: str | None = None


async def used_bytes(db: Database) -> int:
    """Bytes held by live pages of the database.

    Free pages do not count: SQLite reuses them before growing the file. The WAL does not count
    either: deleting rows appends to it, and checkpoints keep it near 4 MB, so leave that headroom.
    """
    values = []
    for pragma in ("page_count", "freelist_count", "page_size"):
        row = await db.fetchone(f"PRAGMA {pragma}")
        values.append(int(row[0]) if row else 0)
    pages, free, size = values
    return (pages - free) * size


async def list_gaps(db: Database, limit: int = 100) -> list[dict[str, object]]:
    """Recorded telemetry gaps, newest first (JSON-ready for the local API)."""
    rows = await db.fetchall(
        "SELECT id, stream, first_seq, last_seq, count, first_ts, last_ts, reason, created_at"
        " FROM sync_gaps ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    keys = ("id", "stream", "first_seq", "last_seq", "count", "first_ts", "last_ts", "reason", "created_at")
    return [dict(zip(keys, tuple(r), strict=True)) for r in rows]


class Retention:
    """Periodic pruning service; ``run()`` forever, ``run_once()`` for one pass, ``kick()`` to run now."""

    def __init__(
        self,
        db: Database,
        settings: RetentionSettings | None = None,
        *,
        clock: Clock | None = None,
        on_disk_level: OnDiskLevel | None = None,
        on_storage_error: OnStorageError | None = None,
    ) -> None:
        self.db = db
        self.settings = settings or RetentionSettings()
        self.clock: Clock = clock or SystemClock()
        self.on_disk_level = on_disk_level
        self.on_storage_error = on_storage_error
        self.level = DiskLevel.OK
        self.last_report: RetentionReport | None = None
        self._kick = asyncio.Event()

    def kick(self) -> None:
        """Run a pass as soon as possible (e.g. after ingest hit 'database or disk is full')."""
        self._kick.set()

    async def run(self) -> None:
        """A pass now, then every ``interval_s`` (sooner after a storage error or a kick)."""
        while True:
            report = await self.run_once()
            pause = self.settings.retry_after_error_s if report.error else self.settings.interval_s
            await self._pause(pause)

    async def _pause(self, seconds: float) -> None:
        if not self._kick.is_set():
            sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
            waiter = asyncio.ensure_future(self._kick.wait())
            try:
                await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for fut in (sleeper, waiter):
                    fut.cancel()
        self._kick.clear()

    def status(self) -> dict[str, object]:
        """Last pass and the current level, JSON-ready."""
        return {
            "level": self.level.value,
            "budget_bytes": self.settings.budget_bytes,
            "last_pass": asdict(self.last_report) if self.last_report else None,
        }

    async def run_once(self) -> RetentionReport:
        """One pass; a SQLite error (disk full, I/O) is reported through the hook, never raised."""
        report = RetentionReport()
        try:
            await self._prune_old(report)
            await self._relieve_pressure(report)
            report.used_bytes = await used_bytes(self.db)
        except sqlite3.OperationalError as exc:
            report.error = storage_error_text(exc)
            log.warning("retention pass failed: %s", report.error)
            if self.on_storage_error is not None:
                try:
                    await self.on_storage_error(report.error)
                except Exception:
                    log.exception("on_storage_error hook failed")
        await self._update_level(report)
        self.last_report = report
        return report

    async def _prune_old(self, report: RetentionReport) -> None:
        cutoff = self.clock.time() - self.settings.retention_days * DAY_S
        cursors = await cursor_positions(self.db)
        # Old samples also wait for the local aggregator (when there is one), so the status page's charts keep
        # the minutes and hours of rows that are gone. Under disk pressure (below) the upstream copy is enough.
        report.pruned_samples = await self._chunked(
            "DELETE FROM telemetry_samples WHERE id IN (SELECT id FROM telemetry_samples"
            " WHERE ts < ? AND id <= ? AND id <= COALESCE((SELECT last_id FROM aggregator_state"
            " WHERE name = 'telemetry'), id) AND id < (SELECT MAX(id) FROM telemetry_samples) LIMIT ?)",
            (cutoff, cursors.get(TELEMETRY, 0)),
        )
        for stream in OUTBOX_STREAMS:
            report.pruned_outbox += await self._chunked(
                "DELETE FROM sync_outbox WHERE id IN (SELECT id FROM sync_outbox WHERE stream = ? AND id <= ?"
                " AND created_at < ? AND id < (SELECT MAX(id) FROM sync_outbox) ORDER BY id LIMIT ?)",
                (stream, cursors.get(stream, 0), cutoff),
            )
        report.pruned_dead_letters = await self._chunked(
            "DELETE FROM sync_dead_letters WHERE id IN (SELECT id FROM sync_dead_letters WHERE created_at < ?"
            " ORDER BY id LIMIT ?)",
            (cutoff,),
        )
        await self.db.execute("DELETE FROM sync_gaps WHERE created_at < ?", (cutoff,))

    async def _chunked(self, sql: str, params: tuple[object, ...], *, until_bytes: int | None = None) -> int:
        """Repeat a ``LIMIT ?`` delete in short transactions; stop early once under ``until_bytes``."""
        total = 0
        while True:
            async with self.db.transaction() as conn:
                cur = await conn.execute(sql, (*params, self.settings.chunk_rows))
                deleted = cur.rowcount
                await cur.close()
            total += deleted
            if deleted < self.settings.chunk_rows:
                return total
            if until_bytes is not None and await used_bytes(self.db) <= until_bytes:
                return total
            await asyncio.sleep(0)  # let ingest and the uplink in between chunks

    async def _relieve_pressure(self, report: RetentionReport) -> None:
        budget = self.settings.budget_bytes
        if budget is None or await used_bytes(self.db) <= budget:
            return
        target = int(budget * self.settings.target_fraction)
        cursors = await cursor_positions(self.db)
        log.warning("database over its byte budget (%d bytes): pruning synced rows of any age", budget)
        report.pressure_samples = await self._chunked(
            "DELETE FROM telemetry_samples WHERE id IN (SELECT id FROM telemetry_samples WHERE id <= ?"
            " AND id < (SELECT MAX(id) FROM telemetry_samples) ORDER BY id LIMIT ?)",
            (cursors.get(TELEMETRY, 0),), until_bytes=target,
        )
        for stream in OUTBOX_STREAMS:
            if await used_bytes(self.db) <= target:
                return
            report.pressure_outbox += await self._chunked(
                "DELETE FROM sync_outbox WHERE id IN (SELECT id FROM sync_outbox WHERE stream = ? AND id <= ?"
                " AND id < (SELECT MAX(id) FROM sync_outbox) ORDER BY id LIMIT ?)",
                (stream, cursors.get(stream, 0)), until_bytes=target,
            )
        while await used_bytes(self.db) > target:
            dropped = await self._drop_unsynced_chunk()
            if dropped == 0:
                log.error("still over the byte budget with no telemetry left to drop")
                return
            report.dropped_unsynced += dropped
            await asyncio.sleep(0)

    async def _drop_unsynced_chunk(self) -> int:
        """Last resort: delete the oldest unsynced samples and record the gap, in one transaction."""
        now = self.clock.time()
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT last_seq FROM sync_cursors WHERE stream = ?", (TELEMETRY,)) as cur:
                row = await cur.fetchone()
            after = int(row[0]) if row else 0
            async with conn.execute(
                "SELECT MIN(id), MAX(id), COUNT(*), MIN(ts), MAX(ts) FROM (SELECT id, ts FROM telemetry_samples"
                " WHERE id > ? AND id < (SELECT MAX(id) FROM telemetry_samples) ORDER BY id LIMIT ?)",
                (after, self.settings.drop_chunk_rows),
            ) as cur:
                span = await cur.fetchone()
            if span is None or not span[2]:
                return 0
            first, last, count, first_ts, last_ts = span
            await conn.execute("DELETE FROM telemetry_samples WHERE id >= ? AND id <= ?", (first, last))
            details = {"stream": TELEMETRY, "count": count, "first_seq": first, "last_seq": last,
                       "first_ts": first_ts, "last_ts": last_ts, "reason": "disk_budget"}
            await conn.execute(
                "INSERT INTO sync_gaps (stream, first_seq, last_seq, count, first_ts, last_ts, reason, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (TELEMETRY, first, last, count, first_ts, last_ts, "disk_budget", now),
            )
            # A zone event like the ones gateway/alerts.py records: local row + outbox row, same body shape.
            cur = await conn.execute(
                "INSERT INTO zone_events (zone_id, type, details, created_at) VALUES (NULL, 'TELEMETRY_GAP', ?, ?)",
                (json.dumps(details), now),
            )
            event = {"event_id": cur.lastrowid, "zone_uid": None, "type": "TELEMETRY_GAP", "details": details,
                     "created_at": now}
            await enqueue(conn, ZONE_EVENTS, event, now)
        log.error("byte budget exceeded: dropped %d unsynced samples (seq %d-%d)", count, first, last)
        return int(count)

    async def _update_level(self, report: RetentionReport) -> None:
        budget = self.settings.budget_bytes
        if budget is None or (report.error is not None and report.used_bytes == 0):
            report.level = self.level.value
            return
        level = self._level_for(report.used_bytes / budget)
        report.level = level.value
        if level is self.level:
            return
        previous, self.level = self.level, level
        log.warning("database size %s -> %s (%d of %d bytes)", previous.value, level.value,
                    report.used_bytes, budget)
        if self.on_disk_level is not None:
            try:
                await self.on_disk_level(level, report.used_bytes, budget)
            except Exception:
                log.exception("on_disk_level hook failed")

    def _level_for(self, fraction: float) -> DiskLevel:
        """Level with hysteresis: going down needs to fall ``hysteresis`` below the threshold."""
        s = self.settings
        down = s.hysteresis
        crit = s.critical_fraction - (down if self.level is DiskLevel.CRITICAL else 0.0)
        warn = s.warn_fraction - (down if self.level is not DiskLevel.OK else 0.0)
        if fraction >= crit:
            return DiskLevel.CRITICAL
        if fraction >= warn:
            return DiskLevel.HIGH
        return DiskLevel.OK
