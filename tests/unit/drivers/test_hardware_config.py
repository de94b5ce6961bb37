"""The [hardware] config dataclasses reject mistakes at start-up, naming the entry."""

from __future__ import annotations

import pytest

from drivers.config import (
    HardwareConfig,
    INA209Config,
    RelayChannelConfig,
    SerialPortConfig,
    WatchdogConfig,
)

RECIRC = RelayChannelConfig("pump_recirc", 17, "NC", "active_open", zone="z1")
DRAIN = RelayChannelConfig("pump_drain", 27, "NO", "active_close", active_high=False, zone="z1")


def test_a_complete_config_is_accepted() -> None:
    cfg = HardwareConfig(
        backend="sim",
        relays=(RECIRC, DRAIN),
        ina209=(INA209Config(bus=1, address=0x40, warning_amps=1.5, critical_amps=2.0, channel="pump_recirc"),),
        watchdog=WatchdogConfig(heartbeat_pin=26, timeout_s=3.0),
        serial=(SerialPortConfig("/dev/ttyUSB0", 115200),),
    )
    assert cfg.ina209[0].key == "pump_recirc"
    assert INA209Config(bus=1, address=0x41).key == "ina209@1:0x41"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: HardwareConfig(relays=(RECIRC, RECIRC)),
            "hardware.relays.1.name: 'pump_recirc' is also hardware.relays.0.name",
        ),
        (
            lambda: HardwareConfig(relays=(RECIRC, RelayChannelConfig("other", 17, "NC", "active_open"))),
            "hardware.relays.1.pin: GPIO 17 of relay 'other' is already hardware.relays.0.pin",
        ),
        (
            lambda: HardwareConfig(relays=(RECIRC,), watchdog=WatchdogConfig(heartbeat_pin=17)),
            "hardware.watchdog.heartbeat_pin: GPIO 17 is also hardware.relays.0.pin",
        ),
        (
            lambda: HardwareConfig(ina209=(INA209Config(bus=1, channel="ghost"),)),
            "hardware.ina209.0.channel: no hardware relay named 'ghost'",
        ),
        (lambda: HardwareConfig(ina209=(INA209Config(1), INA209Config(1))), "bus 1 address 0x40 is also"),
        (lambda: HardwareConfig(backend="mock"), "backend"),  # type: ignore[arg-type]
        (
            lambda: HardwareConfig(serial=(SerialPortConfig("/dev/ttyS0"),) * 2),
            "hardware.serial.1.port: '/dev/ttyS0' is also",
        ),
        (lambda: INA209Config(bus=1, address=0x30), "0x40..0x4F"),
        (lambda: INA209Config(bus=1, warning_amps=1.0, critical_amps=None), "both warning_amps and critical_amps"),
        (lambda: INA209Config(bus=1, warning_amps=2.0, critical_amps=1.0), "warning_amps <= critical_amps"),
        (lambda: INA209Config(bus=1, shunt_ohms=0), "must be > 0"),
        (lambda: WatchdogConfig(timeout_s=0), "timeout_s"),
        (lambda: WatchdogConfig(external_watchdog=True), "needs the heartbeat_pin"),
        (lambda: WatchdogConfig(heartbeat_pin=26, external_watchdog=False), "external_watchdog = false"),
        (lambda: SerialPortConfig("/dev/ttyS0", baudrate=0), "baudrate"),
        (lambda: RelayChannelConfig("pump_recirc", 17, "NC", "active_close"), "'pump_recirc'.*contradicts"),
        (lambda: RelayChannelConfig("", 17, "NC", "active_open"), "needs a name"),
    ],
)
def test_mistakes_are_rejected(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]
