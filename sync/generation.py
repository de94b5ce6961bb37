"""Never reuse a sequence number: the side file of marks, rollback detection at start, new generations.

A sequence number is the gateway's SQLite row id. If the database file goes back in time (replaced by an
older copy, a damaged WAL whose last frames SQLite drops, a restore from backup), new rows get ids that
were already sent upstream with other data. Two independent witnesses catch that at start:

* the side file ``<db>.marks.json``, written (temp + fsync + rename) whenever a cursor or a head moves:
  the last cursor (acknowledged upstream) and head (highest local sequence) per stream, and the generation;
* the upstream, which reports the last sequence it stored per stream for a generation.

If the database is behind either of them it is rolled back: the gateway starts a new generation (so no
new row can collide with what was sent), moves each cursor past what upstream already holds (so nothing
is sent twice), records the sequences it can no longer send as a gap, and raises ``infra_db_rolled_back``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Required, TypedDict

from sync.outbox import enqueue
from sync.ports import Database
from sync.streams import ALL_STREAMS, TELEMETRY, ZONE_EVENTS, StreamSpec

log = logging.getLogger(__name__)

OnRollback = Callable[[dict[str, object]], Awaitable[None]]


class StreamLoss(TypedDict, total=False):
    """One stream in a rollback report: where the marks were and what can no longer be sent.

    A stream that upstream later shows to be behind too is added with ``acknowledged`` and ``cursor`` only.
    """

    local_head: int
    acknowledged: int
    last_seen: int
    cursor: int
    lost_seq: list[int]  # [first, last] of the sequence numbers lost with the rollback


class RollbackReport(TypedDict, total=False):
    """What ``SequenceGuard`` found and did when the database was rolled back (JSON-ready)."""

    source: Required[str]  # "side_file" or "upstream": who knew more than the database
    old_generation: Required[str]
    new_generation: Required[str]
    streams: Required[dict[str, StreamLoss]]
    side_file_generation: str
Heads = Callable[[], Awaitable[dict[str, int]]]


def side_path(db_path: Path) -> Path:
    """Where the side file of a database lives (next to it, so it survives the file being replaced)."""
    return Path(str(db_path) + ".marks.json")


@dataclass(frozen=True)
class StartMarks:
    """What the database held when it was opened, before any service wrote to it."""

    generation: str
    created: bool  # a brand-new file: nothing can have been sent from it
    heads: dict[str, int]  # per stream: max(highest local seq, cursor)
    cursors: dict[str, int]


async def capture_start(db: Database, streams: Sequence[StreamSpec] = ALL_STREAMS) -> StartMarks:
    """Read the local marks right after ``db.open()`` (call it before ingest can add rows)."""
    cursors = {str(r[0]): int(r[1]) for r in await db.fetchall("SELECT stream, last_seq FROM sync_cursors")}
    heads: dict[str, int] = {}
    for spec in streams:
        head = await spec.head(db) if spec.head is not None else 0
        heads[spec.name] = max(head, cursors.get(spec.name, 0))
    return StartMarks(db.generation, db.created, heads, {s.name: cursors.get(s.name, 0) for s in streams})


class SideFile:
    """The small JSON file of last marks; ``write`` is atomic (temp + fsync + rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, object] | None:
        """The last document written, or None if missing or unreadable (logged)."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("side file %s unreadable, ignored: %s", self.path, exc)
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("generation"), str):
            log.warning("side file %s has no generation, ignored", self.path)
            return None
        return doc

    def write(self, doc: Mapping[str, object]) -> None:
        """Replace the file atomically; a power cut leaves the old or the new version, never half of one."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps(doc, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        with contextlib.suppress(OSError):  # the rename itself durable (directory entry)
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


@dataclass
class _Mark:
    cursor: int = 0
    head: int = 0


@dataclass
class SequenceGuard:
    """Keeps the side file current and decides, once at start, whether the database was rolled back."""

    db: Database
    side: SideFile | None
    start: StartMarks | None
    on_rollback: OnRollback | None = None
    streams: tuple[str, ...] = tuple(s.name for s in ALL_STREAMS)
    marks: dict[str, _Mark] = field(default_factory=dict)
    report: RollbackReport | None = None  # the last rollback handled
    _dirty: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        for name in self.streams:
            mark = self.marks.setdefault(name, _Mark())
            if self.start is not None:
                mark.cursor = self.start.cursors.get(name, 0)
                mark.head = self.start.heads.get(name, 0)

    # ---- side file ---------------------------------------------------------------------------
    def moved(self, stream: str, *, cursor: int | None = None, head: int | None = None) -> None:
        """A cursor or head moved: the side file is rewritten soon (coalesced)."""
        mark = self.marks.setdefault(stream, _Mark())
        changed = False
        if cursor is not None and cursor > mark.cursor:
            mark.cursor, changed = cursor, True
        if head is not None and head > mark.head:
            mark.head, changed = head, True
        if mark.cursor > mark.head:
            mark.head = mark.cursor
        if changed:
            self._dirty.set()

    def document(self) -> dict[str, object]:
        """What the side file holds now."""
        return {
            "generation": self.db.generation,
            "written_at": time.time(),
            "streams": {n: {"cursor": m.cursor, "head": m.head} for n, m in self.marks.items()},
        }

    async def flush(self) -> None:
        """Write the side file now (off the event loop)."""
        if self.side is None:
            return
        self._dirty.clear()
        try:
            await asyncio.to_thread(self.side.write, self.document())
        except OSError as exc:
            log.warning("could not write the side file %s: %s", self.side.path, exc)

    async def run_writer(self, heads: Heads | None = None, *, min_interval_s: float = 1.0,
                         head_poll_s: float = 5.0) -> None:
        """Rewrite the side file after every change, at most every ``min_interval_s`` (one fsync: SD wear).

        ``heads`` is polled every ``head_poll_s`` so that rows committed while nothing is sent (an outage,
        or between two sends) are known too: what a rollback takes with it is then recorded as a gap.
        """
        while True:
            # asyncio.timeout: wait_for (3.11) swallows a cancellation that lands as the event fires.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(head_poll_s):
                    await self._dirty.wait()
            if heads is not None:
                try:
                    for name, head in (await heads()).items():
                        self.moved(name, head=head)
                except sqlite3.OperationalError as exc:  # disk full, locked: the next poll tries again
                    log.debug("side file: reading the heads failed: %s", exc)
            if self._dirty.is_set():
                await self.flush()
                await asyncio.sleep(min_interval_s)

    # ---- rollback detection --------------------------------------------------------------------
    async def check_local(self, upstream: dict[str, int] | None = None) -> RollbackReport | None:
        """Compare the database with the side file (and upstream's marks when known already); handle a
        rollback. Returns the report if there was one."""
        if self.side is None or self.start is None:
            return None
        doc = self.side.load()
        seen: dict[str, tuple[int, int]] = {}
        marks = doc.get("streams") if doc is not None else None
        for name, mark in (marks.items() if isinstance(marks, dict) else ()):
            if isinstance(mark, dict):
                seen[str(name)] = (_int(mark.get("cursor")), _int(mark.get("head")))
        if self.start.created or doc is None:
            if doc is not None and doc["generation"] != self.start.generation:
                # A new file (the old one was corrupt and moved aside, or deleted): what the old one had
                # beyond its last acknowledged mark can no longer be sent.
                log.warning("new database (generation %s) replaces generation %s of the side file",
                            self.start.generation, doc["generation"])
                now = time.time()
                for name, (cursor, head) in seen.items():
                    if head > cursor:
                        await self._record_gap(name, cursor + 1, head, str(doc["generation"]), now,
                                               "db_replaced")
            await self.flush()
            return None
        up = upstream or {}
        if doc["generation"] != self.start.generation:
            # An older copy from before a generation change: nothing of the side file applies to it.
            return await self._rolled_back("side_file", up, {}, other_generation=str(doc["generation"]))
        # The side file is written at most once a second: upstream may know a little more.
        acked = {n: max(seen.get(n, (0, 0))[0], up.get(n, 0)) for n in set(seen) | set(up)}
        heads = {n: max(c, h) for n, (c, h) in seen.items()}
        if any(max(acked.get(n, 0), heads.get(n, 0)) > self.start.heads.get(n, 0) for n in self.streams):
            return await self._rolled_back("side_file", acked, heads)
        await self.flush()
        return None

    async def check_upstream(self, acked: dict[str, int]) -> RollbackReport | None:
        """Compare the database with what upstream stored for the start generation; handle a rollback."""
        if self.start is None or self.start.created:
            return None
        behind = [n for n in self.streams if acked.get(n, 0) > self.start.heads.get(n, 0)]
        if not behind:
            return None
        if self.report is None:
            return await self._rolled_back("upstream", acked, {})
        # Already handled from the side file: upstream may only know more of what it holds.
        moved = False
        for name in behind:
            before = self.marks[name].cursor
            cursor = await self._move_cursor(name, min(acked[name], self.start.heads.get(name, 0)), time.time())
            entry = self.report["streams"].setdefault(name, {})
            entry["acknowledged"] = max(int(entry.get("acknowledged", 0)), acked[name])
            entry["cursor"] = cursor
            moved = moved or cursor != before
        if moved:
            await self.flush()
            await self._notify(self.report)
        return self.report

    async def _rolled_back(self, source: str, acked: dict[str, int], seen: dict[str, int],
                           other_generation: str | None = None) -> RollbackReport:
        assert self.start is not None
        old = self.start.generation
        if self.db.generation == old:
            await self.db.new_generation()
        new = self.db.generation
        now = time.time()
        streams: dict[str, StreamLoss] = {}
        for name in self.streams:
            head = self.start.heads.get(name, 0)
            up = acked.get(name, 0)
            last_seen = max(seen.get(name, 0), up)
            # Everything up to min(upstream, local head) is already upstream under the old generation.
            target = min(up, head)
            cursor = await self._move_cursor(name, target, now)
            lost_first, lost_last = max(head, up) + 1, last_seen
            entry: StreamLoss = {"local_head": head, "acknowledged": up, "last_seen": last_seen,
                                     "cursor": cursor}
            if lost_last >= lost_first:
                entry["lost_seq"] = [lost_first, lost_last]
                await self._record_gap(name, lost_first, lost_last, old, now, "db_rolled_back")
            if up > head or last_seen > head:
                streams[name] = entry
        report: RollbackReport = {"source": source, "old_generation": old, "new_generation": new, "streams": streams}
        if other_generation is not None:
            report["side_file_generation"] = other_generation
        self.report = report
        log.critical("database rolled back (%s): generation %s -> %s, %s", source, old, new, streams)
        await self.flush()
        await self._notify(report)
        return report

    async def _notify(self, report: RollbackReport) -> None:
        if self.on_rollback is not None:
            try:
                await self.on_rollback(dict(report))
            except Exception:
                log.exception("on_rollback hook failed")

    async def _move_cursor(self, stream: str, target: int, now: float) -> int:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO sync_cursors (stream, last_seq, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(stream) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq),"
                " updated_at = excluded.updated_at",
                (stream, target, now),
            )
            async with conn.execute("SELECT last_seq FROM sync_cursors WHERE stream = ?", (stream,)) as cur:
                row = await cur.fetchone()
        cursor = int(row[0]) if row is not None else 0
        mark = self.marks.setdefault(stream, _Mark())
        mark.cursor = cursor
        mark.head = max(self.start.heads.get(stream, 0) if self.start else 0, cursor)  # the new generation's
        return cursor

    async def _record_gap(self, stream: str, first: int, last: int, generation: str, now: float,
                          reason: str) -> None:
        """Sequences that existed locally, were never acknowledged upstream and are gone: a gap, sent as one.

        ``count`` is the span of sequence numbers (exact for telemetry, whose ids are dense; the outbox
        streams share one id space, so for them it is an upper bound).
        """
        details = {"stream": stream, "count": last - first + 1, "first_seq": first, "last_seq": last,
                   "first_ts": None, "last_ts": None, "reason": reason, "generation": generation}
        log.error("gap recorded (%s): stream %s seq %d-%d of generation %s", reason, stream, first, last,
                  generation)
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO sync_gaps (stream, first_seq, last_seq, count, first_ts, last_ts, reason, created_at)"
                " VALUES (?, ?, ?, ?, NULL, NULL, ?, ?)",
                (stream, first, last, last - first + 1, reason, now),
            )
            if stream == TELEMETRY:
                cur = await conn.execute(
                    "INSERT INTO zone_events (zone_id, type, details, created_at)"
                    " VALUES (NULL, 'TELEMETRY_GAP', ?, ?)",
                    (json.dumps(details), now),
                )
                event = {"event_id": cur.lastrowid, "zone_uid": None, "type": "TELEMETRY_GAP",
                         "details": details, "created_at": now}
                await enqueue(conn, ZONE_EVENTS, event, now)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
