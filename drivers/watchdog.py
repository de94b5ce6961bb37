"""Relay watchdog: if the safety loop stops ticking, every relay coil drops to de-energised.

Three layers, all fed ONLY by a healthy safety-loop tick calling ``feed()`` (never by a timer of their own):
1. in-process supervisor ``run()``: wakes at least every ``timeout_s / 4`` and exactly at the deadline;
   once the last feed is ``timeout_s`` old it trips: ``relays.release_all()`` (NC pumps run, NO pumps
   stop), logs once, and keeps re-releasing while tripped so nothing else re-energises a coil;
2. a GPIO heartbeat toggled on every feed: an external dead-man circuit drops relay-coil power when the
   edges stop (the process hangs or dies and this supervisor cannot run);
3. systemd ``WatchdogSec``: ``WATCHDOG=1`` sent on feeds, rate-limited to one per ``timeout_s / 4``.

While tripped, the heartbeat does not toggle and WATCHDOG=1 is not sent. A later ``feed()`` means the
safety loop is healthy again: feeding resumes, but the coils stay released until the controller sets
them again (the watchdog never re-energises anything; the safety loop decides from fresh state).
"""

from __future__ import annotations

import logging
from typing import Protocol

from drivers.relay import RelayBank
from drivers.sdnotify_client import SystemdNotifier
from gateway.clock import Clock

log = logging.getLogger(__name__)

_EPSILON_S = 1e-9  # float slack so a wake-up exactly at the deadline counts as reaching it


class HeartbeatPin(Protocol):
    """A digital output that can be toggled (gpiozero ``OutputDevice``)."""

    def toggle(self) -> None:
        """Invert the output level."""
        ...


class RelayWatchdog:
    """Drops every relay coil when ``feed()`` has not been called for ``timeout_s``."""

    def __init__(
        self,
        relays: RelayBank,
        heartbeat_pin: HeartbeatPin | None,
        notifier: SystemdNotifier,
        clock: Clock,
        timeout_s: float,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        self._relays = relays
        self._heartbeat = heartbeat_pin
        self._notifier = notifier
        self._clock = clock
        self.timeout_s = timeout_s
        self.check_period_s = timeout_s / 4
        self._last_feed = clock.monotonic()
        self._last_notify: float | None = None
        self.tripped = False
        self.trip_count = 0
        self.tripped_at: float | None = None

    def feed(self) -> None:
        """Called by the safety loop after each healthy tick."""
        now = self._clock.monotonic()
        self._last_feed = now
        if self.tripped:
            self.tripped = False
            log.warning("relay watchdog: safety loop ticking again; coils stay released until commanded")
        if self._heartbeat is not None:
            self._heartbeat.toggle()
        if self._last_notify is None or now - self._last_notify >= self.check_period_s - _EPSILON_S:
            self._notifier.watchdog()
            self._last_notify = now

    def last_feed_age_s(self) -> float:
        """Seconds since the last feed (monotonic)."""
        return self._clock.monotonic() - self._last_feed

    def ready(self) -> None:
        """Send ``READY=1`` (start-up complete)."""
        self._notifier.ready()

    def stopping(self) -> None:
        """Send ``STOPPING=1`` (clean shutdown begun)."""
        self._notifier.stopping()

    def status(self, text: str) -> None:
        """Send ``STATUS=text``."""
        self._notifier.status(text)

    async def run(self) -> None:
        """Supervise until cancelled; trips once the last feed is ``timeout_s`` old."""
        self._last_feed = self._clock.monotonic()
        while True:
            age = self.last_feed_age_s()
            if age >= self.timeout_s - _EPSILON_S:
                self._trip(age)
                await self._clock.sleep(self.check_period_s)
            else:
                await self._clock.sleep(min(self.check_period_s, self.timeout_s - age))

    def _trip(self, age: float) -> None:
        if not self.tripped:
            self.tripped = True
            self.trip_count += 1
            self.tripped_at = self._clock.monotonic()
            log.error(
                "relay watchdog: no safety-loop tick for %.3f s (timeout %.3f s); releasing every relay coil",
                age,
                self.timeout_s,
            )
        self._relays.release_all()
