"""The relay watchdog's thread releases every coil while the whole event loop is blocked (issue 13, item 8).

Real time, a real event loop, gpiozero MockFactory pins: a coroutine blocks the loop with ``time.sleep``
(a synchronous call in a task) and, still blocking, watches the pins until the watchdog thread has released
them. A watchdog that needed the loop could never release them, and the test would fail at its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from gpiozero import OutputDevice
from gpiozero.pins.mock import MockFactory

from drivers.errors import RelayError
from drivers.relay import PumpRelay, RelayBank
from drivers.sdnotify_client import SystemdNotifier
from drivers.watchdog import RelayWatchdog
from gateway.clock import SystemClock
from tests.conftest import eventually

RECIRC_PIN, DRAIN_PIN, HEARTBEAT_PIN = 5, 6, 26
FEED_PERIOD_S = 0.05
DEADLINE_S = 30.0  # generous: only a broken watchdog ever waits this long


@dataclass
class LiveRig:
    bank: RelayBank
    watchdog: RelayWatchdog
    factory: MockFactory
    feeds: list[float] = field(default_factory=list)  # monotonic time just before every feed

    def level(self, pin: int) -> bool:
        return bool(self.factory.pin(pin).state)

    def heartbeat_edges(self) -> int:
        return len(self.factory.pin(HEARTBEAT_PIN).states) - 1


async def _safety_loop(rig: LiveRig) -> None:
    """Stands in for the safety loop: a healthy tick feeds the watchdog."""
    while True:
        rig.feeds.append(time.monotonic())  # taken before feed(): a lower bound of the watchdog's last feed
        rig.watchdog.feed()
        await asyncio.sleep(FEED_PERIOD_S)


@contextlib.asynccontextmanager
async def live_rig(pin_factory: MockFactory, timeout_s: float) -> AsyncIterator[LiveRig]:
    bank = RelayBank(
        [
            PumpRelay(RECIRC_PIN, "NC", "active_open", True, "pump_recirc", pin_factory),
            PumpRelay(DRAIN_PIN, "NO", "active_close", True, "pump_drain", pin_factory),
        ]
    )
    heartbeat = OutputDevice(HEARTBEAT_PIN, initial_value=False, pin_factory=pin_factory)
    notifier = SystemdNotifier()
    watchdog = RelayWatchdog(bank, heartbeat, notifier, SystemClock(), timeout_s, supervise_in_thread=True)
    rig = LiveRig(bank, watchdog, pin_factory)
    supervisor = asyncio.create_task(watchdog.run())
    feeder = asyncio.create_task(_safety_loop(rig))
    try:
        await eventually(lambda: rig.heartbeat_edges() >= 3, timeout=DEADLINE_S)
        yield rig
    finally:
        for task in (feeder, supervisor):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        bank.close()
        heartbeat.close()
        notifier.close()


def _block_loop_until(condition: Callable[[], bool]) -> float | None:
    """Block the calling thread (the event loop) with time.sleep until ``condition``; when it held, or None."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.005)
    return None


async def test_blocked_event_loop_releases_every_coil_from_the_thread(
    pin_factory: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    timeout_s = 1.0
    async with live_rig(pin_factory, timeout_s) as rig:
        rig.bank["pump_recirc"].set_pump(False)  # NC recirculation stopped: coil energised
        rig.bank["pump_drain"].set_pump(True)  # NO drain running: coil energised
        assert rig.level(RECIRC_PIN) and rig.level(DRAIN_PIN)
        assert not rig.watchdog.tripped

        for pin in (RECIRC_PIN, DRAIN_PIN):
            rig.factory.pin(pin).clear_states()  # MockPin history from here: [HIGH]
        edges = rig.heartbeat_edges()
        # A synchronous call inside a coroutine: nothing on the event loop runs until it returns.
        with caplog.at_level(logging.ERROR, logger="drivers.watchdog"):
            released_at = _block_loop_until(lambda: not rig.level(RECIRC_PIN) and not rig.level(DRAIN_PIN))
            history = {pin: list(rig.factory.pin(pin).states) for pin in (RECIRC_PIN, DRAIN_PIN)}
            blocked_until = time.monotonic()
        last_feed = rig.feeds[-1]

        assert released_at is not None, "coils still energised while the event loop was blocked"
        assert rig.heartbeat_edges() == edges  # proof the loop was blocked: no feed, no heartbeat edge
        assert rig.watchdog.tripped and rig.watchdog.trip_count == 1
        # NC recirculation pump runs, NO drain pump stops: both coils de-energised by the thread.
        assert rig.bank.pump_states() == {"pump_recirc": True, "pump_drain": False}
        # The MockPin history (taken while blocked) holds exactly one edge per coil: the release.
        for pin in (RECIRC_PIN, DRAIN_PIN):
            assert [s.state for s in history[pin]] == [True, False]
        # Not early: the trip came at least a full timeout after the last feed.
        assert rig.watchdog.tripped_at is not None
        assert last_feed + timeout_s - 1e-6 <= rig.watchdog.tripped_at <= blocked_until
        assert any("releasing every relay coil" in r.getMessage() for r in caplog.records)
        with pytest.raises(RelayError):
            rig.bank["pump_drain"].set_pump(True)  # no start while tripped

        # The loop runs again: the safety loop feeds, recovery is logged, nothing is re-energised.
        with caplog.at_level(logging.WARNING, logger="drivers.watchdog"):
            await eventually(lambda: not rig.watchdog.tripped, timeout=DEADLINE_S)
        assert rig.watchdog.recovery_count == 1
        assert rig.watchdog.last_stall_s is not None and rig.watchdog.last_stall_s >= timeout_s - 1e-6
        assert any("ticking again" in r.getMessage() for r in caplog.records)
        assert rig.bank.pump_states() == {"pump_recirc": True, "pump_drain": False}
        rig.bank["pump_drain"].set_pump(True)  # the gate may switch again after recovery
        assert rig.level(DRAIN_PIN)


async def test_healthy_loop_never_trips_the_thread(pin_factory: MockFactory) -> None:
    timeout_s = 2.0
    async with live_rig(pin_factory, timeout_s) as rig:
        rig.bank["pump_drain"].set_pump(True)
        start = len(rig.feeds)
        # Twice the timeout's worth of feeds (counted, not timed).
        await eventually(lambda: len(rig.feeds) - start >= 2 * timeout_s / FEED_PERIOD_S, timeout=DEADLINE_S)
        gaps = [b - a for a, b in zip(rig.feeds, rig.feeds[1:], strict=False)]
        # Never a trip while every feed came within the timeout (a loaded machine may truly stall the loop:
        # then, and only then, a trip is right).
        fed_in_time = max(gaps) < timeout_s - 0.05
        assert not fed_in_time or (rig.watchdog.trip_count == 0 and rig.level(DRAIN_PIN))


async def test_cancelling_run_stops_the_thread(pin_factory: MockFactory) -> None:
    async with live_rig(pin_factory, 1.0):
        assert any(t.name == "relay-watchdog" for t in threading.enumerate())
    assert not any(t.name == "relay-watchdog" for t in threading.enumerate())
