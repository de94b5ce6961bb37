"""Wrong-credential limiter: after N failures of one credential from one IP within a window, that pair waits.

Keyed by the credential tried and the client IP together (see ``gateway.web.auth.credential_key``): a
technician who mistyped once is never locked out when he types the right token, while a wrong token
repeated from one address still is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class FailureLimiter:
    """Sliding window of failed logins per key (client IP + credential); ``on_lockout`` hears each new lockout."""

    def __init__(
        self,
        now: Callable[[], float],
        max_failures: int = 5,
        window_s: float = 60.0,
        max_clients: int = 10_000,
        on_lockout: Callable[[str], None] | None = None,
    ) -> None:
        self._now = now
        self._on_lockout = on_lockout
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
        if len(recent) == self._max and self._on_lockout is not None:
            self._on_lockout(key)

    def locked(self) -> int:
        """How many keys are locked out right now."""
        return sum(1 for key in list(self._failures) if self.retry_after(key) is not None)

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
