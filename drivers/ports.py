"""What the drivers need from the layers above, as Protocols they satisfy structurally (no gateway import).

``SystemClock`` is the machine's real clock; ``gateway/clock.py`` re-exports it, so a gateway built on real
time hands the drivers an instance of this very class (the relay watchdog checks that to pick its thread).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Monotonic time plus an awaitable sleep: all a driver's timers use (tests drive a ``ManualClock``)."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock of the machine."""

    def monotonic(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def time(self) -> float:
        """Return ``time.time()``."""
        return time.time()

    def now(self) -> datetime:
        """Return the current UTC datetime."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await asyncio.sleep(seconds)
