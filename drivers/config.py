"""The ``[hardware]`` section as frozen dataclasses (pure); ``gateway/settings.py`` builds them from TOML.

Validation here raises ``ValueError`` naming the offending entry, so a bad config fails at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from drivers.relay_logic import FailSafeMode, RelayLogic, validate_relay_logic

Backend = Literal["real", "sim"]


@dataclass(frozen=True)
class RelayChannelConfig:
    """One pump relay: GPIO pin, NC/NO contact, what energising does, coil driver polarity."""

    name: str
    pin: int | str
    fail_safe_mode: FailSafeMode
    relay_logic: RelayLogic
    active_high: bool = True
    zone: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("relay channel needs a name")
        validate_relay_logic(self.name, self.fail_safe_mode, self.relay_logic)


@dataclass(frozen=True)
class INA209Config:
    """One INA209 current monitor and the relay channel whose pump current it measures."""

    bus: int
    address: int = 0x40
    shunt_ohms: float = 0.1
    max_expected_amps: float = 2.0
    warning_amps: float | None = None
    critical_amps: float | None = None
    channel: str | None = None

    def __post_init__(self) -> None:
        where = f"INA209 on bus {self.bus} at {self.address:#04x}"
        if self.bus < 0:
            raise ValueError(f"{where}: bus must be >= 0")
        if not 0x40 <= self.address <= 0x4F:
            raise ValueError(f"{where}: address must be in 0x40..0x4F (A0/A1 pins)")
        if not self.shunt_ohms > 0 or not self.max_expected_amps > 0:
            raise ValueError(f"{where}: shunt_ohms and max_expected_amps must be > 0")
        if (self.warning_amps is None) != (self.critical_amps is None):
            raise ValueError(f"{where}: set both warning_amps and critical_amps, or neither")
        if (
            self.warning_amps is not None
            and self.critical_amps is not None
            and not (0 < self.warning_amps <= self.critical_amps)
        ):
            raise ValueError(f"{where}: need 0 < warning_amps <= critical_amps")

    @property
    def key(self) -> str:
        """Name used for this monitor when it measures no relay channel."""
        return self.channel or f"ina209@{self.bus}:{self.address:#04x}"


@dataclass(frozen=True)
class WatchdogConfig:
    """Relay watchdog: GPIO that feeds the external dead-man circuit, and the stall timeout.

    ``external_watchdog``: ``True``/``False`` says whether a dead-man circuit is fitted; ``None`` (not said)
    means fitted exactly when a heartbeat pin is configured.
    """

    heartbeat_pin: int | str | None = None
    timeout_s: float = 5.0
    external_watchdog: bool | None = None

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError("watchdog timeout_s must be > 0")
        if self.external_watchdog is True and self.heartbeat_pin is None:
            raise ValueError("watchdog: external_watchdog = true needs the heartbeat_pin that feeds it")
        if self.external_watchdog is False and self.heartbeat_pin is not None:
            raise ValueError("watchdog: heartbeat_pin is set but external_watchdog = false; remove one of them")

    @property
    def external_fitted(self) -> bool:
        """Whether an external dead-man circuit watches the heartbeat pin."""
        return self.heartbeat_pin is not None


@dataclass(frozen=True)
class SerialPortConfig:
    """A UART/RS-485 port with nodes attached."""

    port: str
    baudrate: int = 115200

    def __post_init__(self) -> None:
        if not self.port:
            raise ValueError("serial port path is empty")
        if self.baudrate <= 0:
            raise ValueError(f"serial port {self.port}: baudrate must be > 0")


@dataclass(frozen=True)
class HardwareConfig:
    """Everything the drivers need; ``backend="sim"`` runs on any machine."""

    backend: Backend = "real"
    relays: tuple[RelayChannelConfig, ...] = ()
    ina209: tuple[INA209Config, ...] = ()
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    serial: tuple[SerialPortConfig, ...] = ()

    def __post_init__(self) -> None:
        if self.backend not in ("real", "sim"):
            raise ValueError(f"hardware backend must be 'real' or 'sim', not {self.backend!r}")
        names = [r.name for r in self.relays]
        _reject_duplicates("relay channel", names)
        pins = [str(r.pin) for r in self.relays]
        if self.watchdog.heartbeat_pin is not None:
            pins.append(str(self.watchdog.heartbeat_pin))
        _reject_duplicates("GPIO pin", pins)
        _reject_duplicates("INA209", [f"bus {c.bus} address {c.address:#04x}" for c in self.ina209])
        _reject_duplicates("INA209 key", [c.key for c in self.ina209])
        for monitor in self.ina209:
            if monitor.channel is not None and monitor.channel not in names:
                raise ValueError(f"INA209 {monitor.key}: unknown relay channel {monitor.channel!r}")
        _reject_duplicates("serial port", [s.port for s in self.serial])


def _reject_duplicates(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} configured twice")
        seen.add(value)
