"""The schedule runner: time-of-day jobs with a misfire policy and last runs in ``kv_state``, plus periodic jobs.

Time-of-day jobs are evaluated by one function, ``evaluate(job_id)``: fire times in ``(last_run, now]``
from the job's apscheduler trigger, the misfire policy, then the action. What wakes it up is the
driver: apscheduler's ``AsyncIOScheduler`` in the gateway's loop (production), or a loop sleeping on
the injected Clock until the next fire time (tests with a ManualClock). Either way a re-evaluation at
least every ``max_sleep_s`` catches wall-clock jumps (NTP setting the clock of a Pi without RTC).

Periodic jobs (``register_periodic``: water-change checks, recirc ticks, aggregation, retention) run on
monotonic time, because apscheduler's IntervalTrigger follows the wall clock and a backwards step
would stall them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from gateway.automation.schedule_plan import Misfire, Trigger, due_fire_times, plan_runs
from gateway.clock import Clock, SystemClock
from gateway.jsonvalue import as_mapping
from gateway.prometheus import Metrics
from gateway.ratelog import RateLimitedLog
from gateway.store.db import Database

if TYPE_CHECKING:  # imported when the apscheduler driver starts (optional at run time)
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)

Driver = Literal["apscheduler", "clock"]
_KV_PREFIX = "schedule:last_run:"


@dataclass(frozen=True)
class Fire:
    """One execution of a job."""

    job_id: str
    scheduled: datetime  # the fire time executed (for a state reconcile at start: now)
    now: datetime
    catch_up: bool  # late (after downtime) or a reconcile at start
    coalesced: int = 0

    @property
    def late_s(self) -> float:
        """Seconds between the scheduled time and the execution."""
        return (self.now - self.scheduled).total_seconds()


JobAction = Callable[[Fire], Awaitable[None]]
SkipHook = Callable[[Sequence[datetime], datetime], Awaitable[None]]


@dataclass(frozen=True)
class Job:
    """A time-of-day job."""

    id: str
    trigger: Trigger
    action: JobAction
    policy: Misfire = Misfire.COALESCE
    grace_s: float = 0.0
    on_skip: SkipHook | None = None


@dataclass(frozen=True)
class _Periodic:
    fn: Callable[[], Awaitable[object]]
    interval_s: float
    run_at_start: bool


class Scheduler:
    """Runs time-of-day jobs (with misfire policy) and periodic jobs under one TaskGroup."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        driver: Driver | None = None,
        max_sleep_s: float = 30.0,
        late_after_s: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._metrics = metrics or Metrics()  # a private registry when the app does not export one
        # AsyncIOScheduler runs on the real clock; any other clock (tests) drives the planner directly.
        self.driver: Driver = driver or ("apscheduler" if isinstance(clock, SystemClock) else "clock")
        self._max_sleep = max_sleep_s
        self._late_after = late_after_s
        self._jobs: dict[str, Job] = {}
        self._last: dict[str, datetime] = {}
        self._reconciled: set[str] = set()
        self._periodic: dict[str, _Periodic] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._aps: AsyncIOScheduler | None = None
        self._crash: BaseException | None = None
        self.runs = 0
        self.parked_until: float | None = None  # monotonic deadline the clock driver sleeps until (status, tests)
        self._periodic_next: dict[str, float] = {}
        self._storage_ratelog = RateLimitedLog(log, 60.0, clock.monotonic)

    # ---- registration -------------------------------------------------------------------
    def add(self, job: Job) -> None:
        """Add or replace a time-of-day job (a state job is reconciled at its first evaluation)."""
        self._jobs[job.id] = job
        self._reconciled.discard(job.id)
        if self._aps is not None:
            self._aps_add(self._aps, job)
        self._changed.set()

    def remove(self, job_id: str) -> None:
        """Forget a job (its last run stays persisted for when it comes back)."""
        self._jobs.pop(job_id, None)
        self._last.pop(job_id, None)
        if self._aps is not None and self._aps.get_job(job_id) is not None:
            self._aps.remove_job(job_id)
        self._changed.set()

    def job_ids(self) -> list[str]:
        """Ids of the registered time-of-day jobs."""
        return sorted(self._jobs)

    def register_periodic(
        self, name: str, coro_fn: Callable[[], Awaitable[object]], interval_s: float, run_at_start: bool = False
    ) -> None:
        """Run ``coro_fn`` every ``interval_s`` seconds of monotonic time (its errors end the service)."""
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if name in self._periodic:
            raise ValueError(f"periodic job {name!r} already registered")
        self._periodic[name] = p = _Periodic(coro_fn, interval_s, run_at_start)
        if self._tg is not None:
            self._tg.create_task(self._periodic_loop(name, p), name=f"periodic:{name}")

    # ---- evaluation ---------------------------------------------------------------------
    async def evaluate(self, job_id: str, now: datetime | None = None) -> bool:
        """Run what is due for one job under its misfire policy; True when the action ran."""
        async with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return False
            now = now or self._clock.now()
            last = await self._last_run(job_id, now)
            due = due_fire_times(job.trigger, last, now)
            reconcile = job.policy is Misfire.STATE and job_id not in self._reconciled
            if not due and not reconcile:
                return False
            if due:
                # Persisted before acting: a crash mid-action must not repeat a pump start after restart.
                await self._save_last(job_id, due[-1])
            plan = plan_runs(job.policy, due, now, job.grace_s)
            if plan.skipped:
                log.warning(
                    "job %s: %d run(s) missed beyond %.0f s grace skipped", job_id, len(plan.skipped), job.grace_s
                )
                self._metrics.schedule_skipped.labels(job=job_id).inc(len(plan.skipped))
                if job.on_skip is not None:
                    await job.on_skip(plan.skipped, now)
            run_at = plan.run or (now if reconcile else None)
            if run_at is None:
                return False
            self._reconciled.add(job_id)
            late = (now - run_at).total_seconds() > self._late_after
            self.runs += 1
            self._metrics.schedule_runs.labels(job=job_id).inc()
            await job.action(Fire(job_id, run_at, now, catch_up=late or reconcile, coalesced=plan.coalesced))
            return True

    async def run_due(self, now: datetime | None = None) -> int:
        """Evaluate every job; returns how many actions ran."""
        ran = 0
        for job_id in list(self._jobs):
            try:
                ran += await self.evaluate(job_id, now)
            except sqlite3.OperationalError as exc:  # retried at the next evaluation; the loop goes on
                self._storage_ratelog.warn(job_id, "job %s: storage error, will retry: %s", job_id, exc)
        return ran

    def next_fire_time(self, now: datetime) -> datetime | None:
        """The earliest upcoming fire time of any job."""
        times = [
            t
            for job_id, job in self._jobs.items()
            if (t := job.trigger.get_next_fire_time(self._last.get(job_id, now), now)) is not None
        ]
        return min(times, default=None)

    async def _last_run(self, job_id: str, now: datetime) -> datetime:
        if job_id in self._last:
            return self._last[job_id]
        saved = await self._db.get_state(_KV_PREFIX + job_id)
        if saved is not None:
            last = datetime.fromisoformat(str(as_mapping(saved)["last_run"]))
            self._last[job_id] = last
            return last
        await self._save_last(job_id, now)  # a new job has missed nothing
        return now

    async def _save_last(self, job_id: str, last: datetime) -> None:
        self._last[job_id] = last
        await self._db.put_state(
            _KV_PREFIX + job_id, {"last_run": last.astimezone(UTC).isoformat()}, self._clock.time()
        )

    # ---- running ------------------------------------------------------------------------
    async def run(self) -> None:
        """Catch up (misfire policy), then run jobs forever."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for name, p in self._periodic.items():
                    tg.create_task(self._periodic_loop(name, p), name=f"periodic:{name}")
                tg.create_task(
                    self._aps_loop() if self.driver == "apscheduler" else self._clock_loop(), name="schedule-driver"
                )
        finally:
            self._tg = None

    async def _periodic_loop(self, name: str, p: _Periodic) -> None:
        wait = 0.0 if p.run_at_start else p.interval_s
        failures = 0
        while True:
            if wait:
                self._periodic_next[name] = self._clock.monotonic() + wait
                await self._clock.sleep(wait)
            try:
                await p.fn()
            except sqlite3.OperationalError as exc:
                # Disk full or an I/O error: the job is fine, the disk is not. Log once, retry with backoff.
                failures += 1
                if failures == 1:
                    log.error("periodic job %s: storage error, retrying with backoff: %s", name, exc)
                wait = min(p.interval_s, 1.0 * 2 ** min(failures - 1, 6))
                continue
            if failures:
                log.info("periodic job %s recovered after %d storage error(s)", name, failures)
                failures = 0
            wait = p.interval_s

    def sleeping_until(self) -> float | None:
        """Monotonic time of the next wake-up when every loop is asleep; None while any is working."""
        if self.parked_until is None or len(self._periodic_next) < len(self._periodic):
            return None
        return min([self.parked_until, *self._periodic_next.values()])

    async def _clock_loop(self) -> None:
        while True:
            self._changed.clear()
            await self.run_due()
            now = self._clock.now()
            nxt = self.next_fire_time(now)
            wait = min(self._max_sleep, max(0.0, self._max_sleep if nxt is None else (nxt - now).total_seconds()))
            await self._sleep_or_change(wait)

    async def _sleep_or_change(self, seconds: float) -> None:
        deadline = self._clock.monotonic() + seconds
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.sleep(0)  # the sleeper has started: its deadline is registered
            self.parked_until = deadline
            await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.parked_until = None
            for task in (sleeper, changed):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _aps_loop(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        await self.run_due()
        self._aps = AsyncIOScheduler(timezone=UTC)
        for job in self._jobs.values():
            self._aps_add(self._aps, job)
        self._aps.start()
        try:
            while True:
                self._changed.clear()
                await self._sleep_or_change(self._max_sleep)
                if self._crash is not None:
                    raise self._crash
                await self.run_due()
        finally:
            self._aps.shutdown(wait=False)
            self._aps = None

    def _aps_add(self, aps: AsyncIOScheduler, job: Job) -> None:
        aps.add_job(
            self._aps_fire,
            trigger=job.trigger,
            args=[job.id],
            id=job.id,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
            max_instances=1,
        )

    async def _aps_fire(self, job_id: str) -> None:
        try:
            await self.evaluate(job_id)
        except sqlite3.OperationalError as exc:  # the disk, not the job: the next evaluation retries
            self._storage_ratelog.warn(job_id, "job %s: storage error, will retry: %s", job_id, exc)
        except Exception as exc:  # apscheduler would only log it; the supervisor must see it
            self._crash = exc
            self._changed.set()
