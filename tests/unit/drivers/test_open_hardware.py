"""open_hardware: the sim backend wires everything; the real backend fails loudly on this machine."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from drivers.config import HardwareConfig, INA209Config, RelayChannelConfig, WatchdogConfig
from drivers.errors import HardwareUnavailableError
from drivers.hardware import Hardware, open_hardware
from drivers.sdnotify_client import SystemdNotifier
from gateway.clock import ManualClock, SystemClock

SIM = HardwareConfig(
    backend="sim",
    relays=(
        RelayChannelConfig("pump_recirc", 17, "NC", "active_open", zone="z1"),
        RelayChannelConfig("pump_drain", 27, "NO", "active_close", active_high=False, zone="z1"),
    ),
    ina209=(
        INA209Config(bus=1, address=0x40, warning_amps=1.5, critical_amps=2.0, channel="pump_recirc"),
        INA209Config(bus=1, address=0x41, channel="pump_drain"),
        INA209Config(bus=3, address=0x40, shunt_ohms=0.05, max_expected_amps=5.0),
    ),
    watchdog=WatchdogConfig(heartbeat_pin=26, timeout_s=3.0),
)


@pytest.fixture
def hw() -> Iterator[Hardware]:
    hardware = open_hardware(SIM)
    yield hardware
    hardware.close()


def test_sim_relays_start_in_their_fail_safe_state(hw: Hardware) -> None:
    assert hw.relays.pump_states() == {"pump_recirc": True, "pump_drain": False}
    assert hw.pin_factory.pin(27).state is True  # active-low coil driver, de-energised = HIGH
    assert hw.heartbeat is not None and hw.pin_factory.pin(26).function == "output"


def test_sim_monitors_are_configured_with_limits(hw: Hardware) -> None:
    assert set(hw.monitors) == {"pump_recirc", "pump_drain", "ina209@3:0x40"}
    chip = hw.sim_chips["pump_recirc"]
    assert chip.peek(0x16) == 4096  # Cal for 100 µA LSB on 0.1 Ω
    assert chip.peek(0x0C) == 15000  # 1.5 A warning = 150 mV
    assert chip.peek(0x14) == 200 << 8  # 2.0 A critical = 200 mV
    assert chip.peek(0x02) & 0x7 == 0x7  # alert pins armed ...
    assert not (chip.warning_pin_asserted or chip.overlimit_pin_asserted or chip.critical_pin_asserted)  # ... quiet
    chip.set_conditions(current_a=2.2, bus_voltage_v=24.0)
    assert chip.critical_pin_asserted
    # 5 A / 32767 = 152.6 µA ⇒ LSB 200 µA; Cal = trunc(0.04096 / (200e-6 × 0.05)) = 4096
    assert hw.sim_chips["ina209@3:0x40"].peek(0x16) == 4096
    assert hw.sim_buses[1].chip(0x41) is hw.sim_chips["pump_drain"]


async def test_sim_monitors_read_physical_conditions_on_one_thread_per_bus(hw: Hardware) -> None:
    hw.sim_chips["pump_recirc"].set_conditions(current_a=0.8, bus_voltage_v=24.0)
    reading = await hw.monitors["pump_recirc"].read()
    assert reading.current_a == pytest.approx(0.8)
    assert reading.bus_voltage_v == pytest.approx(24.0)
    threads = {key: await monitor.run(lambda: threading.current_thread().name) for key, monitor in hw.monitors.items()}
    assert threads["pump_recirc"] == threads["pump_drain"] != threads["ina209@3:0x40"]
    assert threads["pump_recirc"].startswith("i2c-1")


async def test_watchdog_from_hardware_uses_configured_timeout(hw: Hardware) -> None:
    watchdog = hw.make_watchdog(ManualClock(), SystemdNotifier())
    assert watchdog.timeout_s == 3.0
    assert not watchdog.supervise_in_thread  # simulated time: supervised on the loop, deterministically
    assert hw.make_watchdog(SystemClock(), SystemdNotifier()).supervise_in_thread  # real time: a thread
    watchdog.feed()
    assert len(hw.pin_factory.pin(26).states) == 2  # heartbeat toggled once


def test_close_releases_coils_and_frees_everything() -> None:
    hardware = open_hardware(SIM)
    hardware.relays["pump_drain"].set_pump(True)
    hardware.close()
    assert all(relay.closed for relay in hardware.relays.values())
    assert all(bus.closed for bus in hardware.sim_buses.values())


def test_real_backend_fails_loudly_without_gpio() -> None:
    cfg = HardwareConfig(backend="real", relays=SIM.relays)
    with pytest.raises(HardwareUnavailableError, match="no GPIO hardware"):
        open_hardware(cfg)


def test_real_backend_names_the_missing_i2c_device() -> None:
    cfg = HardwareConfig(backend="real", ina209=(INA209Config(bus=1, channel=None),))
    with pytest.raises(HardwareUnavailableError, match="/dev/i2c-1"):
        open_hardware(cfg)
