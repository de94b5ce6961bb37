"""The ``[hardware]`` section as frozen dataclasses (pure): the one hardware schema of the project.

``gateway/settings.py`` uses these classes directly as the ``[hardware]`` fields (pydantic validates the
TOML tables into them); the defaults here are the gateway's defaults. Validation raises ``ValueError``
naming the offending entry, so a bad config fails at start-up; ``HardwareConfig`` collects every
cross-entry mistake (pins used twice, limits the chip cannot measure) into one ``ConfigProblems``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from drivers.relay_logic import FailSafeMode, RelayLogic, validate_relay_logic

Backend = Literal["real", "sim"]
RelayRole = Literal["recirc", "drain", "fill", "irrigation", "dosing_ph", "dosing_ec", "other"]

# The config file's tables are strict: a misspelt key is an error, not a silently ignored line.
_STRICT = {"extra": "forbid"}
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class ConfigProblems(ValueError):
    """Several config mistakes at once, one line each, every line naming its key (``hardware.relays.1.pin``)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class RelayChannelConfig:
    """One pump relay: GPIO pin, NC/NO contact, what energising does, coil driver polarity, zone and role."""

    __pydantic_config__ = _STRICT

    name: str
    pin: int | str
    fail_safe_mode: FailSafeMode
    relay_logic: RelayLogic
    active_high: bool = True
    zone: str | None = None
    role: RelayRole = "other"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("relay channel needs a name")
        if not _NAME.match(self.name):
            raise ValueError(f"relay channel {self.name!r}: name may only use letters, digits, '_' and '-'")
        validate_relay_logic(self.name, self.fail_safe_mode, self.relay_logic)


@dataclass(frozen=True)
class INA209Config:
    """One INA209 current monitor and the relay channel whose pump current it measures.

    ``warning_amps``/``critical_amps`` are programmed into the chip (its alert pin trips in hardware too);
    set both to ``None`` for a monitor without chip limits.
    """

    __pydantic_config__ = _STRICT

    bus: int = 1
    address: int = 0x40
    shunt_ohms: float = 0.1
    max_expected_amps: float = 2.0
    warning_amps: float | None = 1.2
    critical_amps: float | None = 1.5
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

    __pydantic_config__ = _STRICT

    heartbeat_pin: int | str | None = None
    # No safety tick for this long: the coils drop. 2 s: well above a healthy tick (10 Hz) and the feed
    # jitter of a busy Pi, well below systemd's WatchdogSec (20 s); the value production has always run with.
    timeout_s: float = 2.0
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

    __pydantic_config__ = _STRICT

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

    __pydantic_config__ = _STRICT

    backend: Backend = "real"
    relays: tuple[RelayChannelConfig, ...] = ()
    ina209: tuple[INA209Config, ...] = ()
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    serial: tuple[SerialPortConfig, ...] = ()

    def __post_init__(self) -> None:
        if self.backend not in ("real", "sim"):
            raise ValueError(f"hardware backend must be 'real' or 'sim', not {self.backend!r}")
        problems = hardware_problems(self)
        if problems:
            raise ConfigProblems(problems)


def pin_key(pin: int | str) -> str:
    """One spelling per GPIO: 17, "17", "GPIO17" and "BCM17" are the same pin (BOARD numbers stay apart)."""
    text = str(pin).strip().upper()
    for prefix in ("GPIO", "BCM"):
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            return str(int(text[len(prefix):]))
    return str(int(text)) if text.isdigit() else text


def hardware_problems(cfg: HardwareConfig) -> list[str]:
    """Cross-entry mistakes a technician makes wiring the config, one line each, keyed like the config file."""
    return [*_relay_problems(cfg), *_monitor_problems(cfg), *_duplicates("hardware.serial", "port", cfg.serial)]


def _relay_problems(cfg: HardwareConfig) -> list[str]:
    problems = []
    used: dict[str, str] = {}
    names: dict[str, int] = {}
    for i, relay in enumerate(cfg.relays):
        key = pin_key(relay.pin)
        if key in used:
            problems.append(
                f"hardware.relays.{i}.pin: GPIO {key} of relay {relay.name!r} is already {used[key]}"
                " (two relays on one pin switch together)"
            )
        else:
            used[key] = f"hardware.relays.{i}.pin (relay {relay.name!r})"
        if relay.name in names:
            first = names[relay.name]
            problems.append(f"hardware.relays.{i}.name: {relay.name!r} is also hardware.relays.{first}.name")
        names.setdefault(relay.name, i)
    beat = cfg.watchdog.heartbeat_pin
    if beat is not None and pin_key(beat) in used:
        problems.append(
            f"hardware.watchdog.heartbeat_pin: GPIO {pin_key(beat)} is also {used[pin_key(beat)]}"
            " (the heartbeat would toggle a pump)"
        )
    return problems


def _monitor_problems(cfg: HardwareConfig) -> list[str]:
    problems = []
    names = {r.name for r in cfg.relays}
    seen: dict[str, int] = {}
    for i, dev in enumerate(cfg.ina209):
        if dev.critical_amps is not None and dev.critical_amps > dev.max_expected_amps:
            problems.append(
                f"hardware.ina209.{i}.critical_amps: {dev.critical_amps} A is above"
                f" hardware.ina209.{i}.max_expected_amps ({dev.max_expected_amps} A): the chip cannot measure up to"
                " its own trip point"
            )
        if dev.channel is not None and dev.channel not in names:
            problems.append(f"hardware.ina209.{i}.channel: no hardware relay named {dev.channel!r}")
        for what in (f"bus {dev.bus} address {dev.address:#04x}", f"key {dev.key!r}"):
            if what in seen:
                problems.append(f"hardware.ina209.{i}: INA209 {what} is also hardware.ina209.{seen[what]}")
            seen.setdefault(what, i)
    return problems


def _duplicates(where: str, attr: str, entries: tuple[SerialPortConfig, ...]) -> list[str]:
    problems = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        value = str(getattr(entry, attr))
        if value in seen:
            problems.append(f"{where}.{i}.{attr}: {value!r} is also {where}.{seen[value]}.{attr}")
        seen.setdefault(value, i)
    return problems
