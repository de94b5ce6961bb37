"""Relay watchdog: if the safety loop stops ticking, every relay coil drops to de-energised.

Three layers, all fed ONLY by a healthy safety-loop tick calling ``feed()`` (never by a timer of their own):
1. a supervisor that wakes at least every ``timeout_s / 4`` and exactly at the deadline; once the last feed
   is ``timeout_s`` old it trips: the relay bank is *held released* (every coil de-energised: NC pumps run,
   NO pumps stop; any write that would energise a coil raises ``RelayError``), it logs once, and it keeps
   re-releasing while tripped. With a real-time clock the supervisor is a daemon **thread**
   (``start()``/``stop()``, started by ``run()``): it needs nothing from the event loop, so it acts even
   while the whole loop is blocked (a synchronous call in a task). With a ``ManualClock`` (tests) it is a
   coroutine on the loop, so tripping stays deterministic in simulated time;
2. a GPIO heartbeat toggled on every feed: an external dead-man circuit drops relay-coil power when the
   edges stop (the process hangs or dies and no supervisor can run);
3. systemd ``WatchdogSec``: ``WATCHDOG=1`` sent on feeds, rate-limited to one per ``timeout_s / 4``.

While tripped, the heartbeat does not toggle and WATCHDOG=1 is not sent, and ``tripped`` is True: the
actuator gate refuses every start. Recovery is explicit: a later ``feed()`` (the safety loop completed a
healthy tick) logs the stall, clears ``tripped`` and lifts the hold, but re-energises nothing; the gate
re-applies desired states through the interlock from fresh state.

Trip and recovery both run under the relay bank's lock, the same lock every coil write takes, so a
check of ``tripped`` followed by a write under ``relays.lock`` cannot interleave with a trip.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Protocol

from drivers.ports import Clock
from drivers.ratelog import RateLimitedLog
from drivers.relay import RelayBank
from drivers.sdnotify_client import SystemdNotifier

log = logging.getLogger(__name__)

_EPSILON_S = 1e-9  # float slack so a wake-up exactly at the deadline counts as reaching it
HOLD_REASON = "relay watchdog tripped: the safety loop stopped ticking"


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
        supervise_in_thread: bool = False,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        self._relays = relays
        self._heartbeat = heartbeat_pin
        self._notifier = notifier
        self._clock = clock
        self.timeout_s = timeout_s
        self.check_period_s = timeout_s / 4
        self.supervise_in_thread = supervise_in_thread
        self._last_feed = clock.monotonic()
        self._last_notify: float | None = None
        self._tripped = False
        self.trip_count = 0
        self.recovery_count = 0
        self.tripped_at: float | None = None
        self.last_stall_s: float | None = None  # feed-to-feed gap that ended in the last recovery
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._errors = RateLimitedLog(log, 60.0, clock.monotonic)

    @property
    def tripped(self) -> bool:
        """True from a trip until the next ``feed()``: no coil may be energised, the gate refuses starts."""
        return self._tripped

    def feed(self) -> None:
        """Called by the safety loop after each healthy tick."""
        with self._relays.lock:
            now = self._clock.monotonic()
            if self._tripped:
                self._recover(now - self._last_feed)
            self._last_feed = now
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

    def check(self) -> float:
        """Trip if the last feed is ``timeout_s`` old (re-release if already tripped); seconds to the next check."""
        with self._relays.lock:  # a feed cannot slip in between measuring the age and tripping
            age = self.last_feed_age_s()
            if age >= self.timeout_s - _EPSILON_S:
                self._trip(age)
                return self.check_period_s
        return min(self.check_period_s, self.timeout_s - age)

    async def run(self) -> None:
        """Supervise until cancelled: in a thread (``supervise_in_thread``) or as this coroutine."""
        if self.supervise_in_thread:
            self.start()
            try:
                await asyncio.Event().wait()  # the thread supervises; this task only owns its lifetime
            finally:
                self.stop()
        else:
            self._last_feed = self._clock.monotonic()
            while True:
                await self._clock.sleep(self._checked())

    def start(self) -> None:
        """Start the loop-independent supervisor thread (no-op if it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._last_feed = self._clock.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._thread_main, name="relay-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the supervisor thread and wait for it (its waits end at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _thread_main(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self._checked())

    def _checked(self) -> float:
        """``check()`` that never raises: a supervisor that dies protects nothing."""
        try:
            return self.check()
        except Exception as exc:  # e.g. a relay that cannot be released: keep trying every period
            self._errors.warn("check", "relay watchdog: check failed: %r", exc)
            return self.check_period_s

    def _trip(self, age: float) -> None:
        if not self._tripped:
            self._tripped = True
            self.trip_count += 1
            self.tripped_at = self._clock.monotonic()
            log.error(
                "relay watchdog: no safety-loop tick for %.3f s (timeout %.3f s); releasing every relay coil",
                age,
                self.timeout_s,
            )
            self._relays.hold_released(HOLD_REASON)
        else:
            self._relays.release_all()

    def _recover(self, stall_s: float) -> None:
        self._tripped = False
        self.recovery_count += 1
        self.last_stall_s = stall_s
        self._relays.allow_energise()
        log.warning(
            "relay watchdog: safety loop ticking again after %.3f s without a tick; coils stay released "
            "until the gate re-applies desired states through the interlock",
            stall_s,
        )
