"""Batched telemetry writer: one SQLite transaction per batch (size or time bound, whichever first)."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Sequence
from itertools import chain
from typing import Any, NamedTuple

from gateway.clock import Clock
from gateway.metrics import Metrics
from gateway.store.db import Database

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
# Rows per multi-row statement: 64 × 10 parameters stays under SQLite's oldest variable limit (999).
_CHUNK = 64


@functools.cache
def _multi_row_sql(statement: tuple[str, int, str], rows: int) -> str:
    head, width, tail = statement
    marks = "(" + ",".join("?" * width) + ")"
    return head + ",".join([marks] * rows) + tail


def _chunk_sizes(total: int) -> list[int]:
    """Full chunks, then the rest in powers of two: at most seven distinct statements for sqlite3 to cache."""
    sizes = [_CHUNK] * (total // _CHUNK)
    rest = total % _CHUNK
    bit = _CHUNK
    while rest:
        bit //= 2
        if rest >= bit:
            sizes.append(bit)
            rest -= bit
    return sizes


def _execute_rows(conn: sqlite3.Connection, statement: tuple[str, int, str], rows: Sequence[Sequence[Any]]) -> None:
    # Multi-row statements, not executemany: sqlite3 releases the GIL around every statement it steps, and
    # while the event loop is busy each re-acquisition can wait a whole switch interval (5 ms), so one
    # statement per row made a 200-row commit take 15-60 ms under load.
    start = 0
    for size in _chunk_sizes(len(rows)):
        conn.execute(_multi_row_sql(statement, size), list(chain.from_iterable(rows[start : start + size])))
        start += size


def _write_batch(conn: sqlite3.Connection, batch: list[SampleRow]) -> None:
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
    """Owns the bounded sample queue and commits it in batches; ``stop()`` flushes what is pending."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        metrics: Metrics,
        batch_size: int = 200,
        flush_interval_s: float = 0.5,
        queue_max: int = 20_000,
        max_batch: int | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._metrics = metrics
        self._batch_size = batch_size
        # When ingest runs ahead of the disk, one transaction takes everything already waiting (up to this):
        # a commit costs a thread hand-off and a WAL sync whatever its size, so bigger batches catch up.
        self._max_batch = max(batch_size, max_batch if max_batch is not None else batch_size * 10)
        self._flush_interval = flush_interval_s
        self._queue: asyncio.Queue[SampleRow] = asyncio.Queue(maxsize=queue_max)
        self._pending: list[SampleRow] = []
        self.committed = 0
        self.last_commit_error: str | None = None
        self._inflight: asyncio.Task[None] | None = None

    async def put_many(self, rows: list[SampleRow]) -> None:
        """Queue rows in order; waits while the queue is full (back-pressure reaches the MQTT publisher)."""
        queue = self._queue
        for row in rows:
            if queue.full():
                await queue.put(row)
            else:
                queue.put_nowait(row)

    @property
    def depth(self) -> int:
        """Rows waiting to be committed."""
        return self._queue.qsize() + len(self._pending)

    async def run(self) -> None:
        """Collect rows until the batch is full or the flush interval passes, then commit."""
        while True:
            if not self._pending:  # after a failed commit the kept rows are retried first
                self._pending.append(await self._queue.get())
            deadline = self._clock.monotonic() + self._flush_interval
            while len(self._pending) < self._batch_size:
                while not self._queue.empty() and len(self._pending) < self._batch_size:
                    self._pending.append(self._queue.get_nowait())
                if len(self._pending) >= self._batch_size:
                    break
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    break
                try:
                    self._pending.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            while not self._queue.empty() and len(self._pending) < self._max_batch:
                self._pending.append(self._queue.get_nowait())
            # Shielded: a cancellation (shutdown) must not leave a commit half-known; flush() waits for it.
            self._inflight = asyncio.ensure_future(self._commit_pending())
            await asyncio.shield(self._inflight)

    async def flush(self) -> None:
        """Commit everything queued right now (used at shutdown)."""
        if self._inflight is not None and not self._inflight.done():
            await self._inflight
        while not self._queue.empty():
            self._pending.append(self._queue.get_nowait())
        if self._pending:
            await self._commit_pending()

    async def _commit_pending(self) -> None:
        batch = self._pending
        self._metrics.ingest_queue_depth.set(self._queue.qsize())
        started = time.perf_counter()
        try:
            await self._db.in_thread_transaction(lambda conn: _write_batch(conn, batch))
        except Exception as exc:
            # Disk full / I/O error: keep the rows and retry; the bounded queue then pushes back.
            if self.last_commit_error is None:
                log.error("telemetry commit failed, will retry: %s", exc)
            self.last_commit_error = str(exc)
            self._metrics.ingest_samples.labels(result="commit_retry", reason=type(exc).__name__).inc()
            await self._clock.sleep(1.0)
            return
        if self.last_commit_error is not None:
            log.info("telemetry commits recovered")
            self.last_commit_error = None
        self._metrics.ingest_commit_seconds.observe(time.perf_counter() - started)
        self._metrics.ingest_batch_rows.observe(len(batch))
        self.committed += len(batch)
        self._pending = []
