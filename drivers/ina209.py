"""TI INA209 current/power monitor over I2C (smbus2), with the chip's own alert pins armed.

Units: volts, amperes, watts. Register facts live in ``ina209_registers``. The driver:
- writes configuration (32 V range, PGA ÷8 = ±320 mV, 12-bit bus, 12-bit ×8-averaged shunt, continuous)
  and the calibration from the shunt resistance and the maximum expected current;
- programs warning / critical limits so the Warning and Critical pins trip in hardware even if this
  process is stuck; limits the caller did not ask for are parked at values that never trip;
- reads the Status register exactly once per ``read()`` (it clears on read) and keeps the whole word;
- notices a chip that lost power (calibration reads 0 or configuration is not ours), re-arms it,
  counts it in ``rearm_count`` and reports that cycle as unavailable: its current register is 0 until
  the next conversion, and a reading is never silently 0;
- translates every bus ``OSError`` into ``SensorUnavailableError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from drivers import ina209_registers as reg
from drivers.errors import SensorUnavailableError
from drivers.ina209_registers import INA209Status

log = logging.getLogger(__name__)
T = TypeVar("T")

CONFIG_WORD = (
    reg.CONFIG_BRNG_32V
    | reg.PGA_DIV8 << reg.PGA_SHIFT
    | reg.ADC_12BIT << reg.BADC_SHIFT
    | reg.ADC_12BIT_8_SAMPLES << reg.SADC_SHIFT
    | reg.MODE_SHUNT_BUS_CONTINUOUS
)  # 0x39DF; differs from the reset value 0x399F, which is how a reset chip is recognised
PGA_FULL_SCALE_V = reg.PGA_FULL_SCALE_COUNTS[reg.PGA_DIV8] * reg.SHUNT_LSB_V
PARKED_LIMITS = {
    reg.SHUNT_POSITIVE_WARNING: 0x7FFF,
    reg.SHUNT_NEGATIVE_WARNING: 0x8000,
    reg.POWER_WARNING: 0xFFFF,
    reg.BUS_OVER_VOLTAGE_WARNING: 0xFFF8,
    reg.BUS_UNDER_VOLTAGE_WARNING: 0x0000,
    reg.POWER_OVER_LIMIT: 0xFFFF,
    reg.BUS_OVER_VOLTAGE_OVER_LIMIT: 0xFFF8,
    reg.BUS_UNDER_VOLTAGE_OVER_LIMIT: 0x0000,
    reg.CRITICAL_DAC_POSITIVE: reg.CRITICAL_DAC_MAX << reg.CRITICAL_DAC_SHIFT,
    reg.CRITICAL_DAC_NEGATIVE: reg.CRITICAL_DAC_MAX << reg.CRITICAL_DAC_SHIFT,
    reg.SMBUS_ALERT_MASK: 0x0000,
}


class SMBusLike(Protocol):
    """The subset of ``smbus2.SMBus`` the driver uses (word and block transfers)."""

    def read_word_data(self, i2c_addr: int, register: int) -> int:
        """Read a 16-bit SMBus word (little-endian on the wire)."""
        ...

    def write_word_data(self, i2c_addr: int, register: int, value: int) -> None:
        """Write a 16-bit SMBus word (little-endian on the wire)."""
        ...

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        """Read ``length`` raw bytes starting at ``register``."""
        ...

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int]) -> None:
        """Write raw bytes starting at ``register``."""
        ...


@dataclass(frozen=True)
class INA209Reading:
    """One measurement cycle: shunt/bus volts, amperes, watts and the whole Status word."""

    shunt_voltage_v: float
    bus_voltage_v: float
    current_a: float
    power_w: float
    status: INA209Status
    conversion_ready: bool
    math_overflow: bool
    shunt_saturated: bool = False

    @property
    def warning(self) -> bool:
        """True when a warning limit (shunt ±, power, bus) was crossed since the last read."""
        return bool(self.status & reg.WARNING_FLAGS)

    @property
    def critical(self) -> bool:
        """True when the fast analog critical comparator or an over-limit tripped since the last read."""
        return bool(self.status & (reg.CRITICAL_FLAGS | reg.OVERLIMIT_FLAGS))


@dataclass(frozen=True)
class INA209Limits:
    """Current limits the chip enforces on its own pins."""

    warning_amps: float
    critical_amps: float
    power_limit_w: float | None = None


@dataclass(frozen=True)
class INA209Peaks:
    """Peak-hold registers since the last ``clear_peaks()``."""

    shunt_max_v: float
    shunt_min_v: float
    bus_max_v: float
    bus_min_v: float
    power_max_w: float


class INA209:
    """Driver for one INA209 at ``address`` on an SMBus-like ``bus``."""

    def __init__(
        self,
        bus: SMBusLike,
        address: int = 0x40,
        shunt_ohms: float = 0.1,
        max_expected_amps: float = 2.0,
        *,
        name: str | None = None,
    ) -> None:
        if not 0x40 <= address <= 0x4F:
            raise ValueError(f"INA209 address {address:#04x} outside 0x40..0x4F")
        if not shunt_ohms > 0:
            raise ValueError("shunt_ohms must be > 0")
        if max_expected_amps * shunt_ohms > PGA_FULL_SCALE_V:
            raise ValueError(f"{max_expected_amps} A × {shunt_ohms} Ω exceeds the ±{PGA_FULL_SCALE_V} V shunt range")
        self._bus = bus
        self.address = address
        self.shunt_ohms = shunt_ohms
        self.name = name or f"INA209@{address:#04x}"
        self.current_lsb_a = reg.choose_current_lsb(max_expected_amps)
        self.power_lsb_w = reg.POWER_LSB_FACTOR * self.current_lsb_a
        self.calibration = reg.calibration_value(self.current_lsb_a, shunt_ohms)
        self.limits: INA209Limits | None = None
        self.rearm_count = 0
        self._configured = False

    def configure(self) -> None:
        """Write configuration, calibration and parked limits; clear power-up flags; re-apply limits."""
        self._guard(self._configure)

    def use_limits(self, warning_amps: float, critical_amps: float, power_limit_w: float | None = None) -> None:
        """Validate and remember limits without bus I/O; ``configure()`` (and every re-arm) programs them."""
        limits = INA209Limits(warning_amps, critical_amps, power_limit_w)
        self._validate_limits(limits)
        self.limits = limits

    def set_limits(self, warning_amps: float, critical_amps: float, power_limit_w: float | None = None) -> None:
        """Program shunt ± warning, critical DAC ± and (optionally) power over-limit; enable the pins."""
        self.use_limits(warning_amps, critical_amps, power_limit_w)
        limits = self.limits
        assert limits is not None
        try:
            self._guard(lambda: self._write_limits(limits))
        except SensorUnavailableError:
            self._configured = False  # limits may be half-written: the next read() configures from scratch
            raise

    def read(self) -> INA209Reading:
        """Read one cycle; raise ``SensorUnavailableError`` on bus errors or after re-arming a reset chip."""
        return self._guard(self._read)

    def read_peaks(self) -> INA209Peaks:
        """Read the peak-hold registers."""
        return self._guard(self._read_peaks)

    def clear_peaks(self) -> None:
        """Reset every peak-hold register to its power-on value (write 1 into bit D0)."""

        def _clear() -> None:
            for register in reg.PEAK_REGISTERS:
                self._write(register, 0x0001)

        self._guard(_clear)

    def reset(self) -> None:
        """Software reset (RST bit), then configure again so the chip is never left unarmed."""

        def _reset() -> None:
            self._write(reg.CONFIGURATION, reg.CONFIG_RESET)
            self._configure()

        self._guard(_reset)

    def _configure(self) -> None:
        self._configured = False  # stays False if a transfer below fails: the next read() starts over
        self._write(reg.CONFIGURATION, CONFIG_WORD)
        self._write(reg.CALIBRATION, self.calibration)
        for register, value in PARKED_LIMITS.items():
            self._write(register, value)
        self._read_register(reg.STATUS)  # datasheet: read once after setup to drop power-up flags
        if self.limits is not None:
            self._write_limits(self.limits)
        self._configured = True

    def _validate_limits(self, limits: INA209Limits) -> None:
        if not 0 < limits.warning_amps <= limits.critical_amps:
            raise ValueError("need 0 < warning_amps <= critical_amps")
        if limits.warning_amps * self.shunt_ohms > PGA_FULL_SCALE_V:
            raise ValueError(f"warning {limits.warning_amps} A is beyond the shunt range of {self.name}")
        dac_mv = limits.critical_amps * self.shunt_ohms / reg.CRITICAL_DAC_LSB_V
        if round(dac_mv) > reg.CRITICAL_DAC_MAX:
            raise ValueError(f"critical {limits.critical_amps} A needs {dac_mv:.0f} mV > 255 mV critical DAC")
        if limits.power_limit_w is not None and not 0 < limits.power_limit_w <= 0xFFFF * self.power_lsb_w:
            raise ValueError(f"power_limit_w must be in (0, {0xFFFF * self.power_lsb_w:g}] W")

    def _write_limits(self, limits: INA209Limits) -> None:
        warn_counts = round(limits.warning_amps * self.shunt_ohms / reg.SHUNT_LSB_V)
        self._write(reg.SHUNT_POSITIVE_WARNING, reg.to_register16(warn_counts))
        self._write(reg.SHUNT_NEGATIVE_WARNING, reg.to_register16(-warn_counts))
        # Critical DAC value sits in bits 15..8 (1 mV LSB); low bits 0 = unfiltered, transparent, active low.
        dac = max(1, round(limits.critical_amps * self.shunt_ohms / reg.CRITICAL_DAC_LSB_V))
        self._write(reg.CRITICAL_DAC_POSITIVE, dac << reg.CRITICAL_DAC_SHIFT)
        self._write(reg.CRITICAL_DAC_NEGATIVE, dac << reg.CRITICAL_DAC_SHIFT)
        power = 0xFFFF if limits.power_limit_w is None else round(limits.power_limit_w / self.power_lsb_w)
        self._write(reg.POWER_OVER_LIMIT, power)
        self._write(reg.SMBUS_ALERT_MASK, reg.PIN_ENABLES)  # Warning, Overlimit, Critical pins on; SMBus alert off

    def _read(self) -> INA209Reading:
        config = self._read_register(reg.CONFIGURATION)
        calibration = self._read_register(reg.CALIBRATION)
        if calibration == 0 or config != CONFIG_WORD or not self._configured:
            self._rearm(config, calibration)
        status = INA209Status(self._read_register(reg.STATUS))
        shunt = reg.to_signed16(self._read_register(reg.SHUNT_VOLTAGE))
        bus = self._read_register(reg.BUS_VOLTAGE) >> reg.BUS_SHIFT
        power = self._read_register(reg.POWER)
        current = reg.to_signed16(self._read_register(reg.CURRENT))
        full_scale = reg.PGA_FULL_SCALE_COUNTS[reg.PGA_DIV8]
        return INA209Reading(
            shunt_voltage_v=shunt * reg.SHUNT_LSB_V,
            bus_voltage_v=bus * reg.BUS_LSB_V,
            current_a=current * self.current_lsb_a,
            power_w=power * self.power_lsb_w,
            status=status,
            conversion_ready=bool(status & INA209Status.CONVERSION_READY),
            math_overflow=bool(status & INA209Status.MATH_OVERFLOW),
            shunt_saturated=abs(shunt) >= full_scale,
        )

    def _rearm(self, config: int, calibration: int) -> None:
        if not self._configured:  # never configured, or a previous attempt failed half-way
            self._configure()
            raise SensorUnavailableError(f"{self.name}: configured just now; first reading next cycle")
        self.rearm_count += 1
        log.warning(
            "%s lost its configuration (config=%#06x, calibration=%d; power loss?); re-arming (%d so far)",
            self.name,
            config,
            calibration,
            self.rearm_count,
        )
        self._configure()
        raise SensorUnavailableError(f"{self.name}: chip was reset and has been re-armed; reading next cycle")

    def _read_peaks(self) -> INA209Peaks:
        return INA209Peaks(
            shunt_max_v=reg.to_signed16(self._read_register(reg.SHUNT_POSITIVE_PEAK)) * reg.SHUNT_LSB_V,
            shunt_min_v=reg.to_signed16(self._read_register(reg.SHUNT_NEGATIVE_PEAK)) * reg.SHUNT_LSB_V,
            bus_max_v=(self._read_register(reg.BUS_MAX_PEAK) >> reg.BUS_SHIFT) * reg.BUS_LSB_V,
            bus_min_v=(self._read_register(reg.BUS_MIN_PEAK) >> reg.BUS_SHIFT) * reg.BUS_LSB_V,
            power_max_w=self._read_register(reg.POWER_PEAK) * self.power_lsb_w,
        )

    def _read_register(self, register: int) -> int:
        return reg.swap16(self._bus.read_word_data(self.address, register))

    def _write(self, register: int, value: int) -> None:
        self._bus.write_word_data(self.address, register, reg.swap16(value))

    def _guard(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except OSError as exc:
            raise SensorUnavailableError(f"{self.name}: I2C error: {exc}") from exc
