"""Store-and-forward uplink: one independent loop per stream, cursor advanced only after a 2xx."""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypedDict

from sync.backoff import Backoff, parse_retry_after
from sync.client import BatchResult, Outcome, UpstreamClient, UpstreamError
from sync.generation import RollbackReport, SequenceGuard
from sync.outbox import Batch, load_cursor, quarantine, read_batch, record_success
from sync.ports import Clock, Database, SystemClock
from sync.reachability import Reachability
from sync.status import StreamStatus, SyncStatus
from sync.storage_errors import storage_error_text
from sync.streams import ALL_STREAMS, TELEMETRY, StreamSpec

log = logging.getLogger(__name__)


class UplinkStatus(TypedDict):
    """``Uplink.status()``: every stream, reachability, the generation, conflicts and the last rollback."""

    streams: dict[str, StreamStatus]
    upstream: dict[str, object]
    generation: str
    conflicts: int
    rollback: RollbackReport | None

OnStorageError = Callable[[str], Awaitable[None]]
OnConflict = Callable[[dict[str, object]], Awaitable[None]]


@dataclass(frozen=True)
class UplinkSettings:
    """Tunables of the uplink (defaults suit a Raspberry Pi on a flaky LTE link)."""

    telemetry_max_rows: int = 2000
    max_rows: int = 500
    max_bytes: int = 2_000_000  # uncompressed JSON per batch
    gzip_level: int = 5
    idle_poll_s: float = 5.0
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    retry_after_cap_s: float = 3600.0
    retry_after_jitter: float = 0.5  # a Retry-After of h waits uniform(h, h * (1 + this)): a herd spreads out
    reject_attempts: int = 3  # a batch-specific 4xx is retried this often before quarantine
    bisect_rejected: bool = True  # narrow a rejected batch down to the offending rows
    backlog_refresh_s: float = 10.0
    marks_http_attempts: int = 5  # an upstream that answers the marks query with errors this often is not asked
    marks_first_timeout_s: float = 5.0  # the first marks query at start, before the side-file check


class Uplink:
    """Runs every stream's send loop; ``status()`` is JSON-ready, ``notify()`` wakes idle streams."""

    def __init__(
        self,
        db: Database,
        client: UpstreamClient,
        settings: UplinkSettings | None = None,
        *,
        streams: Sequence[StreamSpec] = ALL_STREAMS,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        reachability: Reachability | None = None,
        on_storage_error: OnStorageError | None = None,
        guard: SequenceGuard | None = None,
        on_conflict: OnConflict | None = None,
    ) -> None:
        self.db = db
        self.client = client
        self.settings = settings or UplinkSettings()
        self.streams = tuple(streams)
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.reachability = reachability or Reachability(clock=self.clock)
        self.on_storage_error = on_storage_error
        self.guard = guard
        self.on_conflict = on_conflict
        self.conflicts = 0
        self.switching = asyncio.Lock()
        # Nothing is sent before the start-up rollback check has run (with a guard).
        self.cleared = asyncio.Event()
        if guard is None:
            self.cleared.set()
        self._status = {s.name: SyncStatus(s.name, batch_limit=self._full_limit(s)) for s in self.streams}
        self._wake = {s.name: asyncio.Event() for s in self.streams}

    def _full_limit(self, spec: StreamSpec) -> int:
        return self.settings.telemetry_max_rows if spec.name == TELEMETRY else self.settings.max_rows

    async def run(self, *, until_idle: bool = False) -> None:
        """Send forever (cancel to stop); with ``until_idle`` return once every stream is caught up."""
        async with asyncio.TaskGroup() as tg:
            if not self.cleared.is_set():
                tg.create_task(self._start_check(), name="uplink-start-check")
            for spec in self.streams:
                tg.create_task(_StreamLoop(self, spec).run(until_idle), name=f"uplink-{spec.name}")
            if not until_idle:
                tg.create_task(self.reachability.run(), name="uplink-reachability")
                if self.guard is not None:
                    tg.create_task(self.guard.run_writer(self._heads), name="uplink-side-file")
        if self.guard is not None:
            await self.guard.flush()

    async def _heads(self) -> dict[str, int]:
        """The highest local sequence of every stream (O(1) each), read in one transaction."""
        heads: dict[str, int] = {}
        async with self.db.transaction():
            for spec in self.streams:
                if spec.head is not None:
                    heads[spec.name] = await spec.head(self.db)
        return heads

    async def _start_check(self) -> None:
        """Rollback check against the side file, then against upstream's marks; then sending may start."""
        guard = self.guard
        assert guard is not None
        start = guard.start
        if start is None or start.created:
            await guard.check_local()
            self.cleared.set()
            return
        # One quick question first, so the side-file check can use upstream's exact marks (an exact gap);
        # if upstream cannot answer now, the side file decides and upstream is asked again before sending.
        try:
            first: dict[str, int] | None = await asyncio.wait_for(
                self.client.stream_marks(start.generation), self.settings.marks_first_timeout_s)
            answered = True
        except (UpstreamError, TimeoutError) as exc:
            log.warning("upstream marks not available at start (%s); checking the side file alone", exc)
            first, answered = None, False
            for st in self._status.values():
                st.last_error = f"start check (upstream marks): {exc or type(exc).__name__}"
        await guard.check_local(first)
        marks = first if answered else await self._upstream_marks(start.generation)
        if marks is not None:
            await guard.check_upstream(marks)
        self.cleared.set()

    async def _upstream_marks(self, generation: str) -> dict[str, int] | None:
        """Ask upstream what it stored for ``generation``; retried while it cannot be reached."""
        backoff = Backoff(self.settings.backoff_base_s, self.settings.backoff_cap_s, self.rng)
        http_failures = 0
        while True:
            try:
                marks = await self.client.stream_marks(generation)
                await self.reachability.record(True)
                return marks
            except UpstreamError as exc:
                log.warning("upstream marks for generation %s: %s", generation, exc)
                for st in self._status.values():  # nothing is sent before this answer: say why
                    st.last_error, st.last_status = f"start check (upstream marks): {exc}", exc.status
                await self.reachability.record(exc.status is not None and exc.status < 500)
                if exc.status is not None:
                    http_failures += 1
                    if http_failures >= self.settings.marks_http_attempts:
                        log.error("upstream does not report its marks; relying on the side file alone")
                        return None
            await self.clock.sleep(backoff.next_delay())

    def notify(self, stream: str | None = None) -> None:
        """New rows exist: wake the idle loop of ``stream`` (or of all streams) now instead of at the poll."""
        for name, event in self._wake.items():
            if stream is None or stream == name:
                event.set()

    def status(self) -> UplinkStatus:
        """Per-stream SyncStatus plus reachability, JSON-ready."""
        wall, mono = self.clock.time(), self.clock.monotonic()
        return {
            "streams": {name: st.to_dict(wall, mono) for name, st in self._status.items()},
            "upstream": self.reachability.status(),
            "generation": self.db.generation,
            "conflicts": self.conflicts,
            "rollback": self.guard.report if self.guard is not None else None,
        }

    def stream_status(self, stream: str) -> SyncStatus:
        """Live status object of one stream."""
        return self._status[stream]


class _StreamLoop:
    """The send loop of one stream; owns its backoff, bisection and status."""

    def __init__(self, uplink: Uplink, spec: StreamSpec) -> None:
        self.up = uplink
        self.spec = spec
        self.st = uplink._status[spec.name]
        self.cfg = uplink.settings
        self.backoff = Backoff(self.cfg.backoff_base_s, self.cfg.backoff_cap_s, uplink.rng)
        self.full_limit = uplink._full_limit(spec)
        self.limit = self.full_limit
        self.hint: int | None = None  # the server's X-Max-Batch-Rows, honoured until it stops sending one
        self.bisecting = False
        self.rejections = 0
        self.backlog_at: float | None = None

    async def run(self, until_idle: bool) -> None:
        """Loop: read one batch, send it, act on the outcome."""
        await self._guard_storage(self._load)
        if not self.up.cleared.is_set():
            await self._wait_cleared()
            await self._guard_storage(self._load)  # the check may have moved the cursor
        ahead: asyncio.Task[Batch | None] | None = None
        while True:
            try:
                batch = await (_shielded(ahead) if ahead is not None else self._read(self.st.cursor))
            except sqlite3.OperationalError as exc:
                await self._storage_problem(exc)
                continue
            finally:
                ahead = None
            if batch is not None and batch.count > self.limit:  # read ahead before the server asked for less
                continue
            if batch is None:
                self._caught_up()
                if until_idle:
                    return
                await self._idle()
                continue
            # Read and encode the next batch while this one is on the wire (at most two batches in
            # memory). It is only used if this one is confirmed; it is never cancelled midway because a
            # cancelled read could leave the shared connection inside BEGIN.
            prefetch = asyncio.create_task(self._read(batch.last_seq)) if batch.count >= self.limit else None
            try:
                stored = await self._send(batch)
            except BaseException:
                if prefetch is not None:
                    _detach(prefetch)  # shutting down: let the read finish on its own
                raise
            if prefetch is not None:
                if stored and self.st.cursor == batch.last_seq:
                    ahead = prefetch
                else:
                    await asyncio.wait({prefetch})
                    if not prefetch.cancelled():
                        prefetch.exception()  # retrieved: a failed prefetch is simply redone

    async def _read(self, after_seq: int) -> Batch | None:
        return await read_batch(
            self.up.db, self.spec, self.up.client.gateway_id, after_seq, generation=self.up.db.generation,
            max_rows=self.limit, max_bytes=self.cfg.max_bytes, gzip_level=self.cfg.gzip_level,
        )

    async def _load(self) -> None:
        cursor = await load_cursor(self.up.db, self.spec.name)
        st = self.st
        st.cursor, st.last_success_at = cursor.last_seq, cursor.last_success_at
        st.rows_sent, st.batches_sent = cursor.rows_sent, cursor.batches_sent
        st.duplicate_batches, st.quarantined_rows = cursor.duplicate_batches, cursor.quarantined_rows
        await self._refresh_backlog(force=True)

    async def _wait_cleared(self) -> None:
        """Wait for the start-up check, keeping the backlog figures current meanwhile."""
        self.st.state = "checking"
        while not self.up.cleared.is_set():
            sleeper = asyncio.ensure_future(self.up.clock.sleep(self.cfg.backlog_refresh_s))
            waiter = asyncio.ensure_future(self.up.cleared.wait())
            try:
                await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for fut in (sleeper, waiter):
                    fut.cancel()
            if not self.up.cleared.is_set():
                await self._refresh_backlog(force=False)

    async def _guard_storage(self, op: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await op()
                return
            except sqlite3.OperationalError as exc:
                await self._storage_problem(exc)

    async def _send(self, batch: Batch) -> bool:
        """POST one batch and act on the answer; True if the cursor moved past it."""
        st = self.st
        st.state = "sending"
        st.batch_limit = self.limit
        st.oldest_unsynced_at = batch.oldest_at
        st.meter.start(self.up.clock.monotonic())
        result = await self.up.client.post_batch(self.spec.name, batch.body, batch.key)
        await self.up.reachability.record(result.reachable)
        st.last_status = result.status
        self._take_hint(result)
        if result.outcome in (Outcome.STORED, Outcome.DUPLICATE):
            return await self._stored(batch, duplicate=result.outcome is Outcome.DUPLICATE)
        st.attempts += 1
        st.last_error = _describe(result)
        if result.outcome is Outcome.CONFLICT:
            await self._conflict(batch, result)
            return False
        if result.outcome is Outcome.TOO_LARGE and batch.count > 1:
            self.limit = max(1, batch.count // 2)
            return False
        if result.outcome in (Outcome.REJECTED, Outcome.TOO_LARGE):
            if not await self._rejected(batch, result):
                await self._wait(self.backoff.next_delay(), "backoff")
            return False
        hinted = (parse_retry_after(result.retry_after, self.up.clock.time())
                  if result.status in (429, 503) else None)
        if hinted is not None:
            # The server said when: wait that (plus jitter) without growing the exponential backoff, so a
            # gateway refused many times in a busy morning does not wait minutes after its next lost answer.
            jitter = self.up.rng.uniform(0.0, self.cfg.retry_after_jitter)
            delay = min(hinted, self.cfg.retry_after_cap_s) * (1.0 + jitter)
        else:
            delay = self.backoff.next_delay()
        await self._wait(delay, "denied" if result.outcome is Outcome.DENIED else "backoff")
        return False

    async def _stored(self, batch: Batch, *, duplicate: bool) -> bool:
        st, clock = self.st, self.up.clock
        now = clock.time()
        try:
            await record_success(self.up.db, batch, now, duplicate=duplicate)
        except sqlite3.OperationalError as exc:
            # The upstream has the batch; it is resent after the pause and answered as a duplicate.
            await self._storage_problem(exc)
            return False
        st.cursor = batch.last_seq
        if self.up.guard is not None:
            self.up.guard.moved(self.spec.name, cursor=batch.last_seq)
        st.last_success_at = now
        st.rows_sent += batch.count
        st.batches_sent += 1
        st.duplicate_batches += int(duplicate)
        st.attempts, st.last_error = 0, None
        st.backlog_rows = max(0, st.backlog_rows - batch.count)
        st.meter.add(batch.count, clock.monotonic())
        self.backoff.reset()
        self.rejections = 0
        if not self.bisecting and self.limit < self.ceiling():
            self.limit = min(self.ceiling(), self.limit * 2)  # recover from a 413 or a hint step by step
        await self._refresh_backlog(force=False)
        return True

    def ceiling(self) -> int:
        """The largest batch allowed now: the configured size, or the server's hint if smaller."""
        return self.full_limit if self.hint is None else min(self.full_limit, self.hint)

    def _take_hint(self, result: BatchResult) -> None:
        """Follow the server's batch size hint on every answer that carries one (or its absence on a 2xx)."""
        if result.max_rows is not None:
            self.hint = result.max_rows
            if not self.bisecting:
                self.limit = min(self.limit, self.hint)
        elif result.outcome in (Outcome.STORED, Outcome.DUPLICATE):
            self.hint = None

    async def _rejected(self, batch: Batch, result: BatchResult) -> bool:
        """Count a permanent rejection; True once the batch was split or quarantined."""
        self.rejections += 1
        if self.rejections < self.cfg.reject_attempts:
            return False
        self.rejections = 0
        if batch.count > 1 and self.cfg.bisect_rejected:
            self.bisecting = True
            self.limit = max(1, batch.count // 2)
            return True
        try:
            await quarantine(self.up.db, batch, attempts=self.st.attempts, status=result.status or 0,
                             response=result.detail, now=self.up.clock.time())
        except sqlite3.OperationalError as exc:
            await self._storage_problem(exc)
            return True
        log.error("stream %s: quarantined seq %d-%d after HTTP %s: %s", self.spec.name, batch.first_seq,
                  batch.last_seq, result.status, result.detail[:200])
        st = self.st
        st.cursor = batch.last_seq
        if self.up.guard is not None:
            self.up.guard.moved(self.spec.name, cursor=batch.last_seq)
        st.quarantined_rows += batch.count
        st.backlog_rows = max(0, st.backlog_rows - batch.count)
        st.attempts = 0
        self.bisecting, self.limit = False, self.ceiling()
        self.backoff.reset()
        return True

    async def _conflict(self, batch: Batch, result: BatchResult) -> None:
        """409: upstream holds other data under these sequence numbers. Never a success: stop, alert, and
        continue in a new generation (unless another stream already started one since this batch was read)."""
        up = self.up
        up.conflicts += 1
        details = {"stream": self.spec.name, "first_seq": batch.first_seq, "last_seq": batch.last_seq,
                   "generation": batch.generation, "response": result.detail[:500]}
        try:
            async with up.switching:  # two streams answered 409 at once: one new generation, one alert
                switch = batch.generation == up.db.generation
                if switch:
                    details["new_generation"] = await up.db.new_generation()
        except sqlite3.OperationalError as exc:
            await self._storage_problem(exc)
            return
        if switch:
            log.error("stream %s: upstream conflict on seq %d-%d of generation %s; now generation %s: %s",
                      self.spec.name, batch.first_seq, batch.last_seq, batch.generation,
                      details["new_generation"], result.detail[:200])
            if up.guard is not None:
                await up.guard.flush()  # the side file names the new generation
            if up.on_conflict is not None:
                try:
                    await up.on_conflict(details)
                except Exception:
                    log.exception("on_conflict hook failed")
        await self._wait(self.backoff.next_delay(), "conflict")

    async def _wait(self, delay: float, state: str) -> None:
        st = self.st
        st.state, st.last_delay_s = state, delay
        st.next_attempt_at = self.up.clock.monotonic() + delay
        log.debug("stream %s: %s, next attempt in %.1fs (%s)", self.spec.name, state, delay, st.last_error)
        # Sleep in slices so that an outage shows its real, growing backlog (rows keep arriving while
        # nothing is sent); otherwise the count would only move after the next successful send.
        deadline = st.next_attempt_at
        while True:
            left = deadline - self.up.clock.monotonic()
            if left <= 0:
                break
            await self.up.clock.sleep(min(left, self.cfg.backlog_refresh_s))
            if deadline - self.up.clock.monotonic() > 0:
                await self._refresh_backlog(force=False)
        st.next_attempt_at = None

    async def _storage_problem(self, exc: sqlite3.OperationalError) -> None:
        """SQLite failed (e.g. database or disk is full): report, pause, retry; never crash the sync."""
        message = storage_error_text(exc)
        self.st.last_error = f"storage: {message}"
        log.warning("stream %s: storage error: %s", self.spec.name, message)
        hook = self.up.on_storage_error
        if hook is not None:
            try:
                await hook(message)
            except Exception:
                log.exception("on_storage_error hook failed")
        await self._wait(self.backoff.next_delay(), "storage_error")

    def _caught_up(self) -> None:
        st = self.st
        st.state, st.backlog_rows, st.oldest_unsynced_at = "idle", 0, None
        st.attempts, st.last_error = 0, None
        st.meter.stop()
        self.backlog_at = self.up.clock.monotonic()

    async def _idle(self) -> None:
        event = self.up._wake[self.spec.name]
        if not event.is_set():
            sleeper = asyncio.ensure_future(self.up.clock.sleep(self.cfg.idle_poll_s))
            waiter = asyncio.ensure_future(event.wait())
            try:
                await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for fut in (sleeper, waiter):
                    fut.cancel()
        event.clear()

    async def _refresh_backlog(self, *, force: bool) -> None:
        """Exact count now and then; between refreshes the count is decremented per batch."""
        now = self.up.clock.monotonic()
        if not force and self.backlog_at is not None and now - self.backlog_at < self.cfg.backlog_refresh_s:
            return
        self.backlog_at = now
        try:
            async with self.up.db.transaction():
                count, oldest = await self.spec.backlog(self.up.db, self.st.cursor)
                head = await self.spec.head(self.up.db) if self.spec.head is not None else None
        except sqlite3.OperationalError as exc:
            log.warning("stream %s: backlog count failed: %s", self.spec.name, exc)
            return
        self.st.backlog_rows = count
        if self.up.guard is not None and head is not None:
            self.up.guard.moved(self.spec.name, head=head)
        if oldest is not None:
            self.st.oldest_unsynced_at = oldest


async def _shielded(task: asyncio.Task[Batch | None]) -> Batch | None:
    """Await a read-ahead without cancelling it if we are cancelled (see ``_StreamLoop.run``)."""
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        _detach(task)
        raise


def _detach(task: asyncio.Task[Batch | None]) -> None:
    """Let a task run to its end unobserved; its error, if any, is retrieved and dropped."""
    task.add_done_callback(lambda t: None if t.cancelled() else t.exception())


def _describe(result: BatchResult) -> str:
    if result.status is None:
        return result.detail
    return f"HTTP {result.status}: {result.detail[:300]}"
