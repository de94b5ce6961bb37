"""Wrong-credential limiter: after N failures within a window a client waits, even with the right secret."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class FailureLimiter:
    """Sliding window of failed logins per client key (the client IP)."""

    def __init__(
        self, now: Callable[[], float], max_failures: int = 5, window_s: float = 60.0, max_clients: int = 10_000
    ) -> None:
        self._now = now
        self._max = max_failures
        self._window = window_s
        self._max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None when it may try now."""
        recent = self._recent(key)
        if recent is None or len(recent) < self._max:
            return None
        return max(0.0, recent[0] + self._window - self._now())

    def failure(self, key: str) -> None:
        """Record one wrong credential from ``key``."""
        recent = self._recent(key)
        if recent is None:
            if len(self._failures) >= self._max_clients:
                self._prune()
            recent = self._failures[key] = deque(maxlen=self._max)
        recent.append(self._now())

    def success(self, key: str) -> None:
        """A correct credential clears the client's record."""
        self._failures.pop(key, None)

    def _recent(self, key: str) -> deque[float] | None:
        recent = self._failures.get(key)
        if recent is None:
            return None
        cutoff = self._now() - self._window
        while recent and recent[0] <= cutoff:
            recent.popleft()
        if not recent:
            del self._failures[key]
            return None
        return recent

    def _prune(self) -> None:
        # Bounded memory under a spray of source addresses: drop expired entries, then the oldest.
        for key in list(self._failures):
            self._recent(key)
        while len(self._failures) >= self._max_clients:
            oldest = min(self._failures, key=lambda k: self._failures[k][-1])
            del self._failures[oldest]
