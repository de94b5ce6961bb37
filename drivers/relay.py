"""Pump relays on GPIO (gpiozero): the API speaks pump ON/OFF, this adapter drives the coil.

NC/NO semantics come from ``relay_logic`` (seed 003 §11): an NC pump runs with its coil de-energised,
an NO pump is stopped with its coil de-energised. ``active_high`` is only the coil *driver* polarity
(True: pin HIGH energises the coil).

Every coil starts DE-ENERGISED (``OutputDevice(initial_value=False)``, set atomically with the output
direction), so an NC pump runs from the first instant. ``release()`` de-energises (fail-safe state).
``close()`` releases and then lets gpiozero turn the pin into a floating input: from then on, and if the
process dies, the board's pull resistors and the relay watchdog's dead-man circuit must keep the coil
de-energised (ARCHITECTURE habit 3).

``open_relay_bank(..., backend="real")`` uses gpiozero's default factory (lgpio on a Pi) and raises
``HardwareUnavailableError`` when no GPIO hardware is present; it never falls back to mock pins.
``backend="sim"`` uses ``gpiozero.pins.mock.MockFactory``.

Every coil write of a bank goes through one ``CoilGuard``: a re-entrant lock (the relay watchdog writes
pins from its own thread, the event loop writes them from the loop thread) and a *hold*. While a bank is
held released (the watchdog tripped), a write that would energise a coil raises ``RelayError`` (an NO pump
start or an NC pump stop); releasing is always allowed. A caller that checks a condition and then writes
(e.g. "watchdog not tripped, so start") holds ``RelayBank.lock`` across both to make them atomic.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Literal, Protocol

from gpiozero import Device, GPIOZeroError, OutputDevice
from gpiozero.pins.mock import MockFactory

from drivers.config import RelayChannelConfig
from drivers.errors import HardwareUnavailableError, RelayError
from drivers.relay_logic import (
    FailSafeMode,
    RelayLogic,
    coil_energised_for,
    fail_safe_pump_on,
    pump_on_for,
    validate_relay_logic,
)

log = logging.getLogger(__name__)

Backend = Literal["real", "sim"]


class PinFactory(Protocol):
    """A gpiozero pin factory (real GPIO or ``MockFactory``): builds the pins, freed by ``close()``."""

    def close(self) -> None:
        """Release every pin it made."""
        ...


class CoilGuard:
    """The lock shared by every coil write of a bank and the hold that keeps its coils released."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.held_by: str | None = None  # why coils must stay released, or None


class PumpRelay:
    """One pump channel's relay coil."""

    def __init__(
        self,
        pin: int | str,
        fail_safe_mode: FailSafeMode,
        relay_logic: RelayLogic,
        active_high: bool = True,
        name: str = "",
        pin_factory: PinFactory | None = None,
        zone: str | None = None,
    ) -> None:
        self.name = name or f"GPIO{pin}"
        validate_relay_logic(self.name, fail_safe_mode, relay_logic)
        self.fail_safe_mode: FailSafeMode = fail_safe_mode
        self.relay_logic: RelayLogic = relay_logic
        self.active_high = active_high
        self.zone = zone
        self.pin = pin
        self.guard = CoilGuard()  # a RelayBank replaces it with the bank's shared guard
        try:
            self._device = OutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)
        except GPIOZeroError as exc:
            raise HardwareUnavailableError(f"relay {self.name!r} on pin {pin}: {exc}") from exc

    def set_pump(self, on: bool) -> None:
        """Drive the coil so the pump is ON (``True``) or OFF (``False``).

        Raises ``RelayError`` if that energises the coil while the bank is held released.
        """
        energise = coil_energised_for(self.fail_safe_mode, on)
        with self.guard.lock:
            if energise and self.guard.held_by is not None:
                raise RelayError(
                    f"relay {self.name!r}: coils held released ({self.guard.held_by}); "
                    f"not switching the pump {'ON' if on else 'OFF'}"
                )
            self._device.value = energise

    @property
    def pump_on(self) -> bool:
        """Whether the contact currently lets the pump run (what we command, not a measurement)."""
        return pump_on_for(self.fail_safe_mode, self.coil_energised)

    @property
    def coil_energised(self) -> bool:
        """Whether the coil is driven."""
        return bool(self._device.value)

    @property
    def fail_safe_pump_on(self) -> bool:
        """Whether the pump runs when control is lost (NC: yes, NO: no)."""
        return fail_safe_pump_on(self.fail_safe_mode)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return bool(self._device.closed)

    def release(self) -> None:
        """De-energise the coil: the fail-safe state (NC pump runs, NO pump stops)."""
        with self.guard.lock:
            self._device.off()

    def close(self) -> None:
        """Release the coil, then free the pin (it becomes a floating input)."""
        with self.guard.lock:  # not while the watchdog thread is writing this pin
            if self.closed:
                return
            try:
                self.release()
            finally:
                self._device.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"pump_on={self.pump_on}"
        return f"PumpRelay({self.name!r}, {self.fail_safe_mode}, pin={self.pin}, {state})"


class RelayBank(Mapping[str, PumpRelay]):
    """Pump relays by channel name."""

    def __init__(
        self, relays: Iterable[PumpRelay], pin_factory: PinFactory | None = None, owns_factory: bool = False
    ) -> None:
        self._relays: dict[str, PumpRelay] = {}
        for relay in relays:
            if relay.name in self._relays:
                raise ValueError(f"relay channel {relay.name!r} defined twice")
            self._relays[relay.name] = relay
        self.guard = CoilGuard()
        for relay in self._relays.values():
            relay.guard = self.guard  # one lock and one hold for the whole bank
        self.pin_factory = pin_factory
        self._owns_factory = owns_factory

    def __getitem__(self, name: str) -> PumpRelay:
        return self._relays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._relays)

    def __len__(self) -> int:
        return len(self._relays)

    @property
    def lock(self) -> threading.RLock:
        """The re-entrant lock every coil write of this bank takes."""
        return self.guard.lock

    @property
    def held_by(self) -> str | None:
        """Why the coils are held released (no coil may be energised), or ``None``."""
        return self.guard.held_by

    def hold_released(self, reason: str) -> None:
        """Release every coil and refuse to energise any until ``allow_energise()``."""
        with self.guard.lock:
            self.guard.held_by = reason
            self.release_all()

    def allow_energise(self) -> None:
        """Lift the hold: coils may be energised again (nothing is re-energised here)."""
        with self.guard.lock:
            self.guard.held_by = None

    def release_all(self) -> None:
        """De-energise every coil; tries them all, then raises ``RelayError`` if any failed."""
        failed: list[str] = []
        with self.guard.lock:
            for name, relay in self._relays.items():
                if relay.closed:
                    continue  # a freed pin is a floating input: nothing left to drive
                try:
                    relay.release()
                except Exception:
                    log.exception("could not release relay %r", name)
                    failed.append(name)
        if failed:
            raise RelayError(f"could not release relays: {', '.join(failed)}")

    def pump_states(self) -> dict[str, bool]:
        """Commanded pump state per channel."""
        return {name: relay.pump_on for name, relay in self._relays.items()}

    def close(self) -> None:
        """Release and free every relay (and the pin factory if this bank created it)."""
        for relay in self._relays.values():
            try:
                relay.close()
            except Exception:
                log.exception("could not close relay %r", relay.name)
        if self._owns_factory and self.pin_factory is not None:
            self.pin_factory.close()


def real_pin_factory() -> PinFactory:
    """gpiozero's default (hardware) pin factory, or ``HardwareUnavailableError``; never mock pins."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            factory = Device._default_pin_factory()
        except Exception as exc:
            tried = "; ".join(str(w.message) for w in caught) or str(exc)
            raise HardwareUnavailableError(
                f"no GPIO hardware available ({tried}). On a Raspberry Pi install lgpio and run as a member "
                "of the gpio group; on a development machine use hardware backend 'sim'."
            ) from exc
    if isinstance(factory, MockFactory):
        factory.close()
        raise HardwareUnavailableError(
            "GPIOZERO_PIN_FACTORY selects mock pins but the hardware backend is 'real'; refusing fake relays"
        )
    for warning in caught:
        log.warning("GPIO: %s", warning.message)
    pins: PinFactory = factory  # gpiozero is untyped
    return pins


def make_pin_factory(backend: Backend) -> PinFactory:
    """The pin factory for a backend: real hardware or gpiozero's MockFactory."""
    if backend == "real":
        return real_pin_factory()
    if backend == "sim":
        mock: PinFactory = MockFactory()
        return mock
    raise ValueError(f"unknown hardware backend {backend!r}; expected 'real' or 'sim'")


def open_relay_bank(
    channels: Sequence[RelayChannelConfig], backend: Backend = "real", pin_factory: PinFactory | None = None
) -> RelayBank:
    """Create every configured relay, coils de-energised; closes what it opened if one fails."""
    owns_factory = pin_factory is None
    factory = make_pin_factory(backend) if pin_factory is None else pin_factory
    relays: list[PumpRelay] = []
    try:
        for ch in channels:
            relays.append(
                PumpRelay(ch.pin, ch.fail_safe_mode, ch.relay_logic, ch.active_high, ch.name, factory, ch.zone)
            )
        return RelayBank(relays, pin_factory=factory, owns_factory=owns_factory)
    except BaseException:
        for relay in relays:
            relay.close()
        if owns_factory:
            factory.close()
        raise
