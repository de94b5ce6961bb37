"""Alerts raised from per-message paths, written at most once per (code, zone, scope) per interval.

A noisy node can trip the same complaint thousands of times a second; each ``Alerts.raise_alert`` is a
SQLite transaction (and an outbox row). In between writes the repeats are only counted in memory and
the next write carries how many there were, so the cost per message stays O(1) and the database sees
one write per interval.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from gateway.alerts import Alerts
from gateway.clock import Clock
from gateway.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

Key = tuple[str, int | None, str]


class AlertThrottle:
    """``raise_alert`` that writes a (code, zone, scope) at most once per ``interval_s``."""

    def __init__(self, alerts: Alerts, clock: Clock, interval_s: float = 60.0, max_keys: int = 10_000) -> None:
        self._alerts = alerts
        self._clock = clock
        self._interval = interval_s
        self._max_keys = max_keys
        self._last: dict[Key, float] = {}
        self._repeats: dict[Key, int] = {}
        self._ratelog = RateLimitedLog(log, 60.0, clock.monotonic)

    async def raise_alert(
        self, code: str, *, zone_id: int | None = None, scope: str = "", details: Mapping[str, object] | None = None
    ) -> bool:
        """Write the alert unless this key was written within the interval; True when it was written."""
        key = (code, zone_id, scope)
        now = self._clock.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._repeats[key] = self._repeats.get(key, 0) + 1
            return False
        if len(self._last) >= self._max_keys:  # bounded under a spray of scopes: forget the old ones
            self._last.clear()
            self._repeats.clear()
        self._last[key] = now
        repeats = self._repeats.pop(key, 0)
        body: dict[str, object] = dict(details or {})
        if repeats:
            body["repeats_not_written"] = repeats
        try:
            await self._alerts.raise_alert(code, zone_id=zone_id, scope=scope, details=body)
        except Exception as exc:  # e.g. a full disk: the alert waits for the next interval, ingest goes on
            self._ratelog.warn(f"{code}:{scope}", "could not record alert %s (%s): %r", code, scope, exc)
            return False
        return True
