"""Pump relays on gpiozero MockFactory pins: physical pin levels for every NC/NO × polarity × pump state."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from drivers.config import RelayChannelConfig
from drivers.errors import HardwareUnavailableError
from drivers.relay import PumpRelay, RelayBank, open_relay_bank

LOGIC = {"NC": "active_open", "NO": "active_close"}


def levels(factory: MockFactory, pin: int) -> list[bool]:
    return [state.state for state in factory.pin(pin).states]


@pytest.mark.parametrize("mode", ["NC", "NO"])
@pytest.mark.parametrize("active_high", [True, False])
@pytest.mark.parametrize("pump_on", [True, False])
def test_pin_level_for_every_combination(pin_factory: MockFactory, mode: str, active_high: bool, pump_on: bool) -> None:
    relay = PumpRelay(17, mode, LOGIC[mode], active_high, "pump", pin_factory)  # type: ignore[arg-type]
    pin = pin_factory.pin(17)
    # Starts de-energised: coil off ⇒ pin at the driver's inactive level.
    assert pin.state is (not active_high)
    assert relay.coil_energised is False
    assert relay.pump_on is (mode == "NC")  # NC pump runs from the first instant
    relay.set_pump(pump_on)
    # NC: pump ON ⇔ coil de-energised; NO: pump ON ⇔ coil energised. Pin = coil XOR active-low.
    coil = (not pump_on) if mode == "NC" else pump_on
    assert relay.coil_energised is coil
    assert pin.state is (coil if active_high else not coil)
    assert relay.pump_on is pump_on
    relay.close()
    assert pin.function == "input"  # freed: floating; board pulls + watchdog keep the coil off
    assert levels(pin_factory, 17)[-1] is (not active_high)  # last driven level: coil released


@pytest.mark.parametrize("active_high", [True, False])
def test_coil_is_never_energised_at_start_up(pin_factory: MockFactory, active_high: bool) -> None:
    PumpRelay(22, "NO", "active_close", active_high, "drain", pin_factory)
    history = levels(pin_factory, 22)
    # MockPin records its (undriven input) level first; output_with_state then drives the inactive level
    # directly, so no energising level ever appears after the pin became an output.
    driven = history[1:] if len(history) > 1 else history
    assert all(level is (not active_high) for level in driven)
    assert history[-1] is (not active_high)


def test_state_history_follows_commands(pin_factory: MockFactory) -> None:
    relay = PumpRelay(5, "NC", "active_open", True, "recirc", pin_factory)
    for on in (False, True, False, True):
        relay.set_pump(on)
    relay.close()
    # NC, active-high coil: OFF ⇒ energise (HIGH), ON ⇒ release (LOW); close releases (already LOW)
    assert levels(pin_factory, 5) == [False, True, False, True, False]


def test_release_is_the_fail_safe_state(pin_factory: MockFactory) -> None:
    nc = PumpRelay(5, "NC", "active_open", True, "recirc", pin_factory)
    no = PumpRelay(6, "NO", "active_close", False, "drain", pin_factory)
    bank = RelayBank([nc, no])
    nc.set_pump(False)
    no.set_pump(True)
    assert bank.pump_states() == {"recirc": False, "drain": True}
    bank.release_all()
    assert bank.pump_states() == {"recirc": True, "drain": False}
    assert pin_factory.pin(5).state is False  # active-high coil released = LOW
    assert pin_factory.pin(6).state is True  # active-low coil released = HIGH
    assert nc.fail_safe_pump_on and not no.fail_safe_pump_on
    bank.close()
    assert nc.closed and no.closed


@pytest.mark.parametrize(("mode", "logic"), [("NC", "active_close"), ("NO", "active_open")])
def test_contradictory_pair_is_rejected_naming_the_channel(pin_factory: MockFactory, mode: str, logic: str) -> None:
    with pytest.raises(ValueError, match=r"'pump_recirc'.*contradicts"):
        PumpRelay(17, mode, logic, True, "pump_recirc", pin_factory)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'pump_recirc'"):
        RelayChannelConfig("pump_recirc", 17, mode, logic)  # type: ignore[arg-type]


def test_unknown_mode_is_rejected(pin_factory: MockFactory) -> None:
    with pytest.raises(ValueError, match=r"'x'.*fail_safe_mode"):
        PumpRelay(17, "NX", "active_open", True, "x", pin_factory)  # type: ignore[arg-type]


def test_duplicate_channel_names_are_rejected(pin_factory: MockFactory) -> None:
    a = PumpRelay(5, "NC", "active_open", name="p", pin_factory=pin_factory)
    b = PumpRelay(6, "NC", "active_open", name="p", pin_factory=pin_factory)
    with pytest.raises(ValueError, match="defined twice"):
        RelayBank([a, b])


CHANNELS = (
    RelayChannelConfig("pump_recirc", 17, "NC", "active_open", zone="z1"),
    RelayChannelConfig("pump_drain", 27, "NO", "active_close", active_high=False, zone="z1"),
)


def test_open_relay_bank_sim_uses_mock_pins() -> None:
    bank = open_relay_bank(CHANNELS, backend="sim")
    try:
        assert isinstance(bank.pin_factory, MockFactory)
        assert bank.pump_states() == {"pump_recirc": True, "pump_drain": False}
        assert bank.pin_factory.pin(27).state is True  # active-low coil, de-energised = HIGH
        assert bank["pump_drain"].zone == "z1"
    finally:
        bank.close()


def test_open_relay_bank_real_fails_loudly_without_gpio() -> None:
    # This machine has no GPIO chip and no lgpio/RPi.GPIO: "real" must refuse, never fall back to mocks.
    with pytest.raises(HardwareUnavailableError, match="no GPIO hardware"):
        open_relay_bank(CHANNELS, backend="real")


def test_real_backend_refuses_mock_pin_factory_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    with pytest.raises(HardwareUnavailableError, match="mock"):
        open_relay_bank(CHANNELS, backend="real")


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="backend"):
        open_relay_bank(CHANNELS, backend="fake")  # type: ignore[arg-type]
