"""Batched telemetry writer: group commit, then the acknowledgements of everything the commit made durable.

Each submitted message (its sample rows, its node's sequence state, its ``Ack``) is one entry; entries are
committed in arrival order, whole, one SQLite transaction per batch (size or linger bound, whichever first).
Only after COMMIT are their acks completed, so a node is PUBACKed only for what a ``kill -9`` cannot lose.
A failed commit (disk full, I/O error) keeps the batch, acknowledges nothing and retries: the bounded queue
then pushes back on the publishers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from itertools import chain
from typing import Any, NamedTuple

from gateway.broker.messages import Ack
from gateway.clock import Clock
from gateway.prometheus import Metrics
from gateway.store.db import Database
from gateway.store.nodes import SeqMark

log = logging.getLogger(__name__)


class SampleRow(NamedTuple):
    """A validated sample ready for ``telemetry_samples`` / ``telemetry_last``."""

    zone_id: int
    node_id: int
    metric_type: str
    channel: str | None
    value: float
    ts: float
    received_at: float
    ts_source: str
    clock_synced: int
    raw: str | None


_INSERT_SAMPLES = (
    "INSERT INTO telemetry_samples(zone_id, node_id, metric_type, channel, value, ts, received_at, ts_source,"
    " clock_synced, raw) VALUES ",
    10,
    "",
)
_UPSERT_LAST = (
    "INSERT INTO telemetry_last(zone_id, node_id, metric_type, channel, value, ts, received_at, raw) VALUES ",
    8,
    " ON CONFLICT(zone_id, node_id, metric_type) DO UPDATE SET value=excluded.value, ts=excluded.ts,"
    " channel=excluded.channel, received_at=excluded.received_at, raw=excluded.raw"
    " WHERE excluded.ts >= telemetry_last.ts",
)
# Rows per multi-row statement, at most: every statement is one GIL round trip for the writer thread (below),
# so fewer and larger ones; a power of two, bounded so the few prepared statements sqlite3 caches stay small.
_CHUNK = 256


@functools.cache
def _multi_row_sql(statement: tuple[str, int, str], rows: int) -> str:
    head, width, tail = statement
    marks = "(" + ",".join("?" * width) + ")"
    return head + ",".join([marks] * rows) + tail


def _chunk_sizes(total: int, chunk: int = _CHUNK) -> list[int]:
    """Full chunks, then the rest in powers of two: a handful of distinct statements for sqlite3 to cache."""
    sizes = [chunk] * (total // chunk)
    rest = total % chunk
    bit = chunk
    while rest:
        bit //= 2
        if rest >= bit:
            sizes.append(bit)
            rest -= bit
    return sizes


@functools.cache
def _rows_per_statement(variable_limit: int, width: int) -> int:
    """The largest power of two up to ``_CHUNK`` whose rows fit SQLite's limit on bound variables."""
    rows = _CHUNK
    while rows > 1 and rows * width > variable_limit:
        rows //= 2
    return rows


def _execute_rows(conn: sqlite3.Connection, statement: tuple[str, int, str], rows: Sequence[Sequence[Any]]) -> None:
    # Multi-row statements, not executemany: sqlite3 releases the GIL around every statement it steps, and
    # while the event loop is busy each re-acquisition can wait a whole switch interval (5 ms): one statement
    # per row made a 200-row commit take 15-60 ms under load, 64 rows per statement still 80-100 ms for the
    # 2,000-row batches of an overload (32 round trips).
    chunk = _rows_per_statement(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER), statement[1])
    start = 0
    for size in _chunk_sizes(len(rows), chunk):
        conn.execute(_multi_row_sql(statement, size), list(chain.from_iterable(rows[start : start + size])))
        start += size


_UPSERT_SEQ = (
    "INSERT INTO node_sequences(node_id, boot, high, holes, gaps, duplicates, updated_at) VALUES ",
    7,
    " ON CONFLICT(node_id) DO UPDATE SET boot=excluded.boot, high=excluded.high, holes=excluded.holes,"
    " gaps=excluded.gaps, duplicates=excluded.duplicates, updated_at=excluded.updated_at",
)


class _Entry(NamedTuple):
    rows: list[SampleRow]
    marks: Sequence[SeqMark]
    ack: Ack | None


def _write_batch(conn: sqlite3.Connection, batch: list[SampleRow], marks: Sequence[SeqMark] = ()) -> None:
    if marks:
        # The newest state per node, in the same transaction as the rows it vouches for.
        _execute_rows(conn, _UPSERT_SEQ, list({m.node_id: m for m in marks}.values()))
    if not batch:
        return
    _execute_rows(conn, _INSERT_SAMPLES, batch)
    # Only the newest row per key reaches telemetry_last (later rows win ties, as applying them in order would).
    newest: dict[tuple[int, int, str], SampleRow] = {}
    for r in batch:
        key = (r.zone_id, r.node_id, r.metric_type)
        seen = newest.get(key)
        if seen is None or r.ts >= seen.ts:
            newest[key] = r
    last = [(r.zone_id, r.node_id, r.metric_type, r.channel, r.value, r.ts, r.received_at, r.raw)
            for r in newest.values()]
    _execute_rows(conn, _UPSERT_LAST, last)


class TelemetryWriter:
    """Owns the bounded queue of entries and group-commits it; ``stop()`` flushes what is pending."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        metrics: Metrics,
        batch_size: int = 200,
        flush_interval_s: float = 0.02,
        queue_max: int = 20_000,
        max_batch: int | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._metrics = metrics
        self._batch_size = batch_size
        # When ingest runs ahead of the disk, one transaction takes everything already waiting (up to this):
        # a commit costs a thread hand-off and a WAL write whatever its size, so bigger batches catch up.
        self._max_batch = max(batch_size, max_batch if max_batch is not None else batch_size * 10)
        # How long the first waiting entry lingers for company: the latency a PUBACK pays for group commit.
        self._flush_interval = flush_interval_s
        self._queue_max = queue_max
        self._entries: deque[_Entry] = deque()
        self._queued_rows = 0
        self._work = asyncio.Event()  # something is queued
        self._full = asyncio.Event()  # a batch's worth is queued
        self._room = asyncio.Event()  # the queue is below its bound
        self._room.set()
        self._pending: list[_Entry] = []
        self._pending_rows = 0
        self.committed = 0
        self.commits = 0
        self.last_commit_error: str | None = None
        self._inflight: asyncio.Task[None] | None = None

    async def submit(self, rows: list[SampleRow], marks: Sequence[SeqMark] = (), ack: Ack | None = None) -> None:
        """Queue one message's rows (and sequence state); ``ack`` is completed after their commit.

        Waits while the queue holds ``queue_max`` rows (back-pressure reaches the MQTT publisher). An entry
        without rows still waits its turn: its ack is then done once everything queued before it is committed.
        """
        while self._queued_rows >= self._queue_max:
            self._room.clear()
            await self._room.wait()
        if ack is not None:
            ack.defer()
        self._entries.append(_Entry(rows, marks, ack))
        self._queued_rows += len(rows)
        self._work.set()
        if self._queued_rows >= self._batch_size:
            self._full.set()

    async def put_many(self, rows: list[SampleRow]) -> None:
        """Queue rows nobody waits for (tests, automation replays), each free to go in any batch."""
        for row in rows:
            await self.submit([row])

    @property
    def depth(self) -> int:
        """Rows waiting to be committed."""
        return self._queued_rows + self._pending_rows

    async def run(self) -> None:
        """Wait for work, let it gather for at most the flush interval (or a full batch), then commit."""
        while True:
            if not self._pending:  # after a failed commit the kept entries are retried first
                while not self._entries:
                    self._work.clear()
                    await self._work.wait()
                if self._queued_rows < self._batch_size and self._flush_interval > 0:
                    self._full.clear()
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when it is
                    # cancelled just as the event fires (a full batch, frequent under load): the shutdown's
                    # cancellation was swallowed and the process hung until systemd killed it. It also
                    # costs no task per commit.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._flush_interval):
                            await self._full.wait()
                self._take()
            # Shielded: a cancellation (shutdown) must not leave a commit half-known; flush() waits for it.
            self._inflight = asyncio.ensure_future(self._commit_pending())
            await asyncio.shield(self._inflight)

    def _take(self) -> None:
        """Move whole entries from the queue to the batch, up to ``max_batch`` rows (at least one entry)."""
        entries, pending = self._entries, self._pending
        rows = self._pending_rows
        while entries and (not pending or rows + len(entries[0].rows) <= self._max_batch):
            entry = entries.popleft()
            pending.append(entry)
            rows += len(entry.rows)
            self._queued_rows -= len(entry.rows)
        self._pending_rows = rows
        if self._queued_rows < self._queue_max:
            self._room.set()

    async def flush(self) -> None:
        """Commit everything queued right now (used at shutdown)."""
        if self._inflight is not None and not self._inflight.done():
            await self._inflight
        while self._pending or self._entries:
            self._take()
            before = len(self._pending)
            await self._commit_pending()
            if self._pending and len(self._pending) >= before:
                return  # the commit failed: nothing more can be made durable now

    async def _commit_pending(self) -> None:
        entries = self._pending
        batch = [row for entry in entries for row in entry.rows]
        marks = [mark for entry in entries for mark in entry.marks]
        self._metrics.ingest_queue_depth.set(self._queued_rows)
        started = time.perf_counter()
        if batch or marks:
            try:
                await self._db.in_thread_transaction(lambda conn: _write_batch(conn, batch, marks))
            except Exception as exc:
                # Disk full / I/O error: keep the entries (nothing acknowledged) and retry; the queue pushes back.
                if self.last_commit_error is None:
                    log.error("telemetry commit failed, will retry: %s", exc)
                self.last_commit_error = str(exc)
                self._metrics.ingest_samples.labels(result="commit_retry", reason=type(exc).__name__).inc()
                await self._clock.sleep(1.0)
                return
            self.commits += 1
        if self.last_commit_error is not None:
            log.info("telemetry commits recovered")
            self.last_commit_error = None
        if batch:
            self._metrics.ingest_commit_seconds.observe(time.perf_counter() - started)
            self._metrics.ingest_batch_rows.observe(len(batch))
        self.committed += len(batch)
        self._pending = []
        self._pending_rows = 0
        for entry in entries:
            if entry.ack is not None:
                entry.ack.set()
