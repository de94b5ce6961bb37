"""Tracks whether the upstream answers; fires hooks once when it has been unreachable too long and once on recovery."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec

from sync.ports import Clock, SystemClock

P = ParamSpec("P")

log = logging.getLogger(__name__)

OnUnreachable = Callable[[float], Awaitable[None]]
OnReachable = Callable[[], Awaitable[None]]


class Reachability:
    """Shared by uplink and downlink; ``run()`` is the monitor that notices a long outage during backoff."""

    def __init__(
        self,
        *,
        unreachable_after_s: float = 600.0,
        clock: Clock | None = None,
        on_unreachable: OnUnreachable | None = None,
        on_reachable: OnReachable | None = None,
    ) -> None:
        self.unreachable_after_s = unreachable_after_s
        self.clock: Clock = clock or SystemClock()
        self.on_unreachable = on_unreachable
        self.on_reachable = on_reachable
        self._down_since_mono: float | None = None
        self._down_since_wall: float | None = None
        self._flagged = False
        self._last_ok_wall: float | None = None
        self._running = False

    @property
    def unreachable(self) -> bool:
        """True once the outage lasted ``unreachable_after_s`` (until the next answer)."""
        return self._flagged

    async def record(self, ok: bool) -> None:
        """Note one contact attempt: ``ok`` means the upstream answered (HTTP status < 500)."""
        if ok:
            self._last_ok_wall = self.clock.time()
            self._down_since_mono = self._down_since_wall = None
            if self._flagged:
                self._flagged = False
                log.info("upstream reachable again")
                await _call(self.on_reachable)
            return
        if self._down_since_mono is None:
            self._down_since_mono = self.clock.monotonic()
            self._down_since_wall = self.clock.time()
        await self.check()

    async def check(self) -> None:
        """Fire ``on_unreachable(since)`` once the outage is older than the threshold."""
        if self._flagged or self._down_since_mono is None or self._down_since_wall is None:
            return
        if self.clock.monotonic() - self._down_since_mono >= self.unreachable_after_s:
            self._flagged = True
            log.warning("upstream unreachable since %.0f", self._down_since_wall)
            await _call(self.on_unreachable, self._down_since_wall)

    async def run(self) -> None:
        """Re-check periodically: streams may sit in a long backoff while the threshold passes."""
        if self._running:  # uplink and downlink may both start it; one monitor is enough
            return
        self._running = True
        try:
            interval = max(1.0, min(30.0, self.unreachable_after_s / 4))
            while True:
                await self.clock.sleep(interval)
                await self.check()
        finally:
            self._running = False

    def status(self) -> dict[str, object]:
        """JSON-ready snapshot."""
        return {
            "unreachable": self._flagged,
            "down_since": self._down_since_wall,
            "last_ok_at": self._last_ok_wall,
        }


async def _call(hook: Callable[P, Awaitable[None]] | None, *args: P.args, **kwargs: P.kwargs) -> None:
    """Run a hook; a failing hook is logged, it must not stop the sync."""
    if hook is None:
        return
    try:
        await hook(*args, **kwargs)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("sync hook %r failed", hook)
