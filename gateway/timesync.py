"""Whether the system clock is synchronised (a Pi has no RTC and may boot in the past)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# systemd-timesyncd touches this file once the clock has been synchronised since boot.
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")


class ClockSyncProbe:
    """Caches the answer for ``ttl_s``; ``assume_synced`` is for machines without timesyncd (dev, CI)."""

    def __init__(self, monotonic: Callable[[], float], assume_synced: bool = False, ttl_s: float = 30.0) -> None:
        self._monotonic = monotonic
        self._assume = assume_synced
        self._ttl = ttl_s
        self._checked_at = float("-inf")
        self._value = False

    def synced(self) -> bool:
        """True when the wall clock can be trusted."""
        if self._assume:
            return True
        now = self._monotonic()
        if now - self._checked_at > self._ttl:
            self._value = TIMESYNC_FLAG.exists()
            self._checked_at = now
        return self._value
