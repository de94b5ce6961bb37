"""Maps the validated ``[hardware]`` settings onto the drivers' own config types."""

from __future__ import annotations

from drivers.config import HardwareConfig, INA209Config, RelayChannelConfig, SerialPortConfig, WatchdogConfig
from gateway.settings import HardwareSection


def hardware_config(section: HardwareSection) -> HardwareConfig:
    """The drivers' HardwareConfig for this gateway."""
    return HardwareConfig(
        backend=section.backend,
        relays=tuple(
            RelayChannelConfig(r.name, r.pin, r.fail_safe_mode, r.relay_logic, r.active_high, r.zone)
            for r in section.relays
        ),
        ina209=tuple(
            INA209Config(
                d.bus, d.address, d.shunt_ohms, d.max_expected_amps, d.warning_amps, d.critical_amps, d.channel
            )
            for d in section.ina209
        ),
        watchdog=WatchdogConfig(
            section.watchdog.heartbeat_pin, section.watchdog.timeout_s, section.watchdog.external_watchdog
        ),
        serial=tuple(SerialPortConfig(s.port, s.baudrate) for s in section.serial),
    )
