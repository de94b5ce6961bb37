"""Time sources: monotonic for safety timeouts, wall time for schedules and timestamps.

``SystemClock`` is defined in ``drivers/ports.py`` (the lowest layer) and re-exported here.
Everything with a timer takes a ``Clock`` so tests drive it with ``ManualClock`` in milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime
from typing import Protocol

from drivers.ports import SystemClock

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """A source of monotonic and wall time plus an awaitable sleep."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch (UTC)."""
        ...

    def now(self) -> datetime:
        """Timezone-aware wall-clock datetime in UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for ``seconds`` of this clock's time."""
        ...


class ManualClock:
    """A clock that only moves when a test calls ``advance``.

    Sleepers are woken in deadline order as time passes them, like Trio's ``MockClock``.
    """

    def __init__(self, start_wall: float = 1_767_225_600.0, start_monotonic: float = 1000.0) -> None:
        self._wall0 = start_wall
        self._mono0 = start_monotonic
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        """Return the manual monotonic time."""
        return self._mono0 + self._elapsed

    def time(self) -> float:
        """Return the manual wall time."""
        return self._wall0 + self._elapsed

    def now(self) -> datetime:
        """Return the manual wall time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), UTC)

    def set_wall(self, wall: float) -> None:
        """Jump the wall clock (e.g. NTP correction) without moving monotonic time."""
        self._wall0 = wall - self._elapsed

    async def sleep(self, seconds: float) -> None:
        """Wait until ``advance`` moves time past the deadline."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.monotonic() + seconds, next(self._seq), fut))
        await fut

    async def advance(self, seconds: float, step: float | None = None) -> None:
        """Move time forward, waking sleepers in order and letting them run.

        ``step`` advances in increments so periodic loops get every tick.
        """
        target = self._elapsed + seconds
        increment = step if step is not None else seconds
        while self._elapsed < target:
            self._elapsed = min(target, self._elapsed + increment)
            await self._wake_due()

    async def _wake_due(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        while self._sleepers and self._sleepers[0][0] <= self.monotonic():
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
            for _ in range(3):
                await asyncio.sleep(0)
