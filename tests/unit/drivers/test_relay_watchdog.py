"""Relay watchdog: a stalled safety loop drops every coil, stops the heartbeat and stops WATCHDOG=1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from gpiozero import OutputDevice
from gpiozero.pins.mock import MockFactory

from drivers.errors import RelayError
from drivers.relay import PumpRelay, RelayBank
from drivers.sdnotify_client import SystemdNotifier
from drivers.watchdog import RelayWatchdog
from gateway.clock import ManualClock

TIMEOUT_S = 2.0
RECIRC_PIN, DRAIN_PIN, HEARTBEAT_PIN = 5, 6, 26


@dataclass
class Rig:
    clock: ManualClock
    bank: RelayBank
    watchdog: RelayWatchdog
    factory: MockFactory
    listener: Any

    def level(self, pin: int) -> bool:
        return bool(self.factory.pin(pin).state)

    def heartbeat_edges(self) -> int:
        return len(self.factory.pin(HEARTBEAT_PIN).states) - 1

    async def tick(self, n: int, period_s: float = 0.1) -> None:
        """A healthy safety loop: one feed per tick."""
        for _ in range(n):
            self.watchdog.feed()
            await self.clock.advance(period_s)


@pytest.fixture
async def rig(pin_factory: MockFactory, notify_listener: Any) -> AsyncIterator[Rig]:
    clock = ManualClock()
    bank = RelayBank(
        [
            PumpRelay(RECIRC_PIN, "NC", "active_open", True, "pump_recirc", pin_factory),
            PumpRelay(DRAIN_PIN, "NO", "active_close", True, "pump_drain", pin_factory),
        ]
    )
    heartbeat = OutputDevice(HEARTBEAT_PIN, initial_value=False, pin_factory=pin_factory)
    notifier = SystemdNotifier()
    watchdog = RelayWatchdog(bank, heartbeat, notifier, clock, timeout_s=TIMEOUT_S)
    task = asyncio.create_task(watchdog.run())
    await asyncio.sleep(0)
    try:
        yield Rig(clock, bank, watchdog, pin_factory, notify_listener)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        bank.close()
        heartbeat.close()
        notifier.close()


async def test_healthy_ticks_toggle_heartbeat_and_rate_limit_systemd(rig: Rig) -> None:
    await rig.tick(30)  # 3 s of 100 ms ticks
    assert not rig.watchdog.tripped
    assert rig.heartbeat_edges() == 30  # one edge per healthy tick
    # WATCHDOG=1 at most every timeout/4 = 0.5 s: ticks at 0.0, 0.5, 1.0, 1.5, 2.0, 2.5 s
    assert rig.listener.messages() == ["WATCHDOG=1"] * 6


async def test_stalled_loop_drops_every_coil_within_the_timeout(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.bank["pump_recirc"].set_pump(False)  # NC: energise to stop the recirculation pump
    rig.bank["pump_drain"].set_pump(True)  # NO: energise to run the drain pump
    assert rig.level(RECIRC_PIN) and rig.level(DRAIN_PIN)
    await rig.tick(20)
    last_feed = rig.clock.monotonic() - 0.1
    edges, _ = rig.heartbeat_edges(), rig.listener.messages()

    with caplog.at_level(logging.ERROR):
        await rig.clock.advance(TIMEOUT_S - 0.1 - 0.05, step=0.05)  # last feed 1.95 s ago
        assert not rig.watchdog.tripped
        assert rig.level(RECIRC_PIN) and rig.level(DRAIN_PIN)
        await rig.clock.advance(0.1, step=0.05)  # now 2.05 s: past the deadline
        assert rig.watchdog.tripped
        assert rig.watchdog.tripped_at is not None
        assert TIMEOUT_S - 1e-6 <= rig.watchdog.tripped_at - last_feed <= TIMEOUT_S + 0.05 + 1e-6
        # Coils de-energised: NC recirculation pump runs, NO drain pump stops.
        assert not rig.level(RECIRC_PIN) and not rig.level(DRAIN_PIN)
        assert rig.bank.pump_states() == {"pump_recirc": True, "pump_drain": False}
        await rig.clock.advance(5.0, step=0.25)  # stays tripped, logs once
    assert rig.heartbeat_edges() == edges  # no toggling since the stall: the dead-man circuit drops too
    assert rig.listener.messages() == []  # no WATCHDOG=1: systemd will restart us
    assert len([r for r in caplog.records if "releasing every relay coil" in r.getMessage()]) == 1
    assert rig.watchdog.trip_count == 1


async def test_while_tripped_nothing_can_re_energise_a_coil(rig: Rig) -> None:
    await rig.tick(5)
    await rig.clock.advance(TIMEOUT_S + 0.5, step=0.1)
    assert rig.watchdog.tripped
    with pytest.raises(RelayError, match="held released"):
        rig.bank["pump_drain"].set_pump(True)  # a stray start while the safety loop is dead: no ON pulse
    with pytest.raises(RelayError, match="held released"):
        rig.bank["pump_recirc"].set_pump(False)  # nor may the NC recirculation pump be stopped
    assert not rig.level(DRAIN_PIN) and not rig.level(RECIRC_PIN)
    assert len(rig.factory.pin(DRAIN_PIN).states) == 1  # the coil was never driven, not even briefly
    rig.bank["pump_drain"].set_pump(False)  # releasing stays allowed
    rig.bank["pump_recirc"].set_pump(True)
    await rig.clock.advance(TIMEOUT_S / 4, step=0.1)
    assert not rig.level(DRAIN_PIN)


async def test_feed_after_trip_resumes_feeding_but_relays_stay_released(rig: Rig) -> None:
    rig.bank["pump_recirc"].set_pump(False)
    await rig.tick(5)
    await rig.clock.advance(TIMEOUT_S + 0.5, step=0.1)
    assert rig.watchdog.tripped
    rig.listener.messages()
    edges = rig.heartbeat_edges()
    await rig.tick(3)  # the safety loop is back
    assert not rig.watchdog.tripped
    assert rig.heartbeat_edges() == edges + 3
    assert rig.listener.messages() == ["WATCHDOG=1"]
    assert rig.bank["pump_recirc"].pump_on  # still released until the controller commands again
    assert rig.bank.held_by is None and rig.watchdog.recovery_count == 1
    rig.bank["pump_recirc"].set_pump(False)
    await rig.tick(10)
    assert not rig.bank["pump_recirc"].pump_on


async def test_ready_status_stopping_reach_systemd(rig: Rig) -> None:
    rig.watchdog.ready()
    rig.watchdog.status("safety loop running")
    rig.watchdog.stopping()
    assert rig.listener.messages() == ["READY=1", "STATUS=safety loop running", "STOPPING=1"]


async def test_a_relay_that_cannot_be_released_does_not_stop_the_others_or_the_supervisor(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rig.bank["pump_recirc"].set_pump(False)
    rig.bank["pump_drain"].set_pump(True)

    def broken() -> None:
        raise OSError("GPIO write failed")

    monkeypatch.setattr(rig.bank["pump_recirc"], "release", broken)
    await rig.tick(5)
    with caplog.at_level(logging.WARNING, logger="drivers.watchdog"):
        await rig.clock.advance(TIMEOUT_S * 3, step=0.1)
    assert rig.watchdog.tripped
    assert not rig.level(DRAIN_PIN)  # the healthy relay was released despite its neighbour
    checks = [r for r in caplog.records if "check failed" in r.getMessage()]
    assert len(checks) == 1 and "pump_recirc" in checks[0].getMessage()  # rate-limited, names the relay
    monkeypatch.undo()
    await rig.clock.advance(TIMEOUT_S / 4, step=0.1)  # the supervisor kept running: next pass releases it
    assert not rig.level(RECIRC_PIN)
