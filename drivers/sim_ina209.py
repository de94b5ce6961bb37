"""Register-level INA209 simulator behind an smbus2-shaped bus (for tests, the demo and ``backend="sim"``).

``SimINA209Chip`` holds the chip's 16-bit register file and turns physical conditions set by the test
(``set_conditions(current_a, bus_voltage_v)``) into register values exactly as the datasheet describes:
shunt ADC in 10 µV counts saturating at the PGA range, bus ADC in 4 mV counts in bits 15..3, current and
power from the calibration register (0 ⇒ both read 0), math overflow, peak-hold registers, limit
comparators setting Status flags that latch until the Status register is read, and the Warning /
Overlimit / Critical pins (transparent mode) when enabled. Every conversion happens when conditions or
registers change, standing in for the chip's continuous mode.

``SimINA209Bus`` is what the driver talks to: registers go over the "wire" big-endian, so word
transfers come out byte-swapped exactly like ``smbus2`` on a real chip. ``disconnected`` and
``fail_next(n)`` make it raise ``OSError`` like a real bus (EREMOTEIO: the chip did not acknowledge).
"""

from __future__ import annotations

import errno
import threading
from collections import Counter

from drivers import ina209_registers as reg
from drivers.ina209_registers import INA209Status

_FLAG = INA209Status


class SimINA209Chip:
    """One simulated INA209: register file plus the physics of its shunt."""

    def __init__(self, shunt_ohms: float = 0.1) -> None:
        self.shunt_ohms = shunt_ohms
        self.current_a = 0.0
        self.bus_voltage_v = 0.0
        self.power_cycles = 0
        self.read_counts: Counter[int] = Counter()
        self._lock = threading.RLock()
        self._regs = [0] * reg.REGISTER_COUNT
        self._violations = INA209Status.NONE
        self._reset_registers()

    def set_conditions(self, current_a: float, bus_voltage_v: float) -> None:
        """Set the physical current through the shunt and the bus voltage, then convert."""
        with self._lock:
            self.current_a = current_a
            self.bus_voltage_v = bus_voltage_v
            self._convert()

    def power_cycle(self) -> None:
        """Lose power: every register returns to its datasheet reset value."""
        with self._lock:
            self.power_cycles += 1
            self._reset_registers()

    def peek(self, register: int) -> int:
        """Register value without side effects (Status is not cleared)."""
        with self._lock:
            return self._regs[register]

    def read_register(self, register: int) -> int:
        """Read as the bus does: returns the big-endian register value; Status clears on read."""
        with self._lock:
            self.read_counts[register] += 1
            value = self._regs[register]
            if register == reg.STATUS:
                # Cleared on read, except flags whose limit is still exceeded: they set again at once.
                self._regs[reg.STATUS] = int(self._violations)
            return value

    def write_register(self, register: int, value: int) -> None:
        """Write as the bus does; read-only registers ignore writes."""
        with self._lock:
            value &= 0xFFFF
            if register == reg.CONFIGURATION and value & reg.CONFIG_RESET:
                self._reset_registers()
                return
            if register in reg.PEAK_REGISTERS:
                if value & 0x0001:
                    self._regs[register] = reg.POWER_ON_RESET.get(register, 0)
                return
            if register in reg.READ_ONLY:
                return
            self._regs[register] = value
            self._convert()

    @property
    def warning_pin_asserted(self) -> bool:
        """Warning pin: enabled and a warning limit is exceeded."""
        return self._pin(reg.WARNING_PIN_ENABLE, reg.WARNING_FLAGS)

    @property
    def overlimit_pin_asserted(self) -> bool:
        """Overlimit pin: enabled and an over-limit is exceeded."""
        return self._pin(reg.OVERLIMIT_PIN_ENABLE, reg.OVERLIMIT_FLAGS)

    @property
    def critical_pin_asserted(self) -> bool:
        """Critical pin: enabled and the analog comparator sees the shunt beyond a critical DAC."""
        return self._pin(reg.CRITICAL_PIN_ENABLE, reg.CRITICAL_FLAGS)

    def _pin(self, enable: int, flags: INA209Status) -> bool:
        with self._lock:
            return bool(self._regs[reg.SMBUS_ALERT_MASK] & enable) and bool(self._violations & flags)

    def _reset_registers(self) -> None:
        self._regs = [reg.POWER_ON_RESET.get(r, 0) for r in range(reg.REGISTER_COUNT)]
        self._violations = INA209Status.NONE
        self._convert()

    def _convert(self) -> None:
        config = self._regs[reg.CONFIGURATION]
        if config & reg.MODE_MASK in reg.MODES_OFF:
            return
        full_scale = reg.PGA_FULL_SCALE_COUNTS[(config >> reg.PGA_SHIFT) & 0x3]
        shunt = _clamp(round(self.current_a * self.shunt_ohms / reg.SHUNT_LSB_V), -full_scale, full_scale)
        bus_max = 0x1FFF if config & reg.CONFIG_BRNG_32V else 0x0FFF
        bus = _clamp(round(self.bus_voltage_v / reg.BUS_LSB_V), 0, bus_max)
        magnitude = abs(shunt) * self._regs[reg.CALIBRATION] // reg.CURRENT_DIVISOR
        current = magnitude if shunt >= 0 else -magnitude
        power = abs(current) * bus // reg.POWER_DIVISOR
        overflow = not -0x8000 <= current <= 0x7FFF or power > 0xFFFF
        current = _clamp(current, -0x8000, 0x7FFF)
        power = min(power, 0xFFFF)
        self._regs[reg.SHUNT_VOLTAGE] = reg.to_register16(shunt)
        self._regs[reg.BUS_VOLTAGE] = bus << reg.BUS_SHIFT
        self._regs[reg.CURRENT] = reg.to_register16(current)
        self._regs[reg.POWER] = power
        self._update_peaks(shunt, bus << reg.BUS_SHIFT, power)
        self._violations = self._compare_limits(shunt, bus << reg.BUS_SHIFT, power)
        if overflow:
            self._violations |= _FLAG.MATH_OVERFLOW
        self._regs[reg.STATUS] |= int(self._violations | _FLAG.CONVERSION_READY)

    def _update_peaks(self, shunt: int, bus_word: int, power: int) -> None:
        r = self._regs
        r[reg.SHUNT_POSITIVE_PEAK] = reg.to_register16(max(reg.to_signed16(r[reg.SHUNT_POSITIVE_PEAK]), shunt))
        r[reg.SHUNT_NEGATIVE_PEAK] = reg.to_register16(min(reg.to_signed16(r[reg.SHUNT_NEGATIVE_PEAK]), shunt))
        r[reg.BUS_MAX_PEAK] = max(r[reg.BUS_MAX_PEAK], bus_word)
        r[reg.BUS_MIN_PEAK] = min(r[reg.BUS_MIN_PEAK], bus_word)
        r[reg.POWER_PEAK] = max(r[reg.POWER_PEAK], power)

    def _compare_limits(self, shunt: int, bus_word: int, power: int) -> INA209Status:
        r = self._regs
        bus_limit = 0xFFF8  # bus limit registers hold the value in bits 15..3, like the bus register
        checks = (
            (_FLAG.WARNING_SHUNT_POSITIVE, shunt > reg.to_signed16(r[reg.SHUNT_POSITIVE_WARNING])),
            (_FLAG.WARNING_SHUNT_NEGATIVE, shunt < reg.to_signed16(r[reg.SHUNT_NEGATIVE_WARNING])),
            (_FLAG.WARNING_POWER, power > r[reg.POWER_WARNING]),
            (_FLAG.WARNING_BUS_OVER_VOLTAGE, bus_word > r[reg.BUS_OVER_VOLTAGE_WARNING] & bus_limit),
            (_FLAG.WARNING_BUS_UNDER_VOLTAGE, bus_word < r[reg.BUS_UNDER_VOLTAGE_WARNING] & bus_limit),
            (_FLAG.OVERLIMIT_POWER, power > r[reg.POWER_OVER_LIMIT]),
            (_FLAG.OVERLIMIT_BUS_OVER_VOLTAGE, bus_word > r[reg.BUS_OVER_VOLTAGE_OVER_LIMIT] & bus_limit),
            (_FLAG.OVERLIMIT_BUS_UNDER_VOLTAGE, bus_word < r[reg.BUS_UNDER_VOLTAGE_OVER_LIMIT] & bus_limit),
            (_FLAG.CRITICAL_SHUNT_POSITIVE, self._shunt_mv() > r[reg.CRITICAL_DAC_POSITIVE] >> 8),
            (_FLAG.CRITICAL_SHUNT_NEGATIVE, self._shunt_mv() < -(r[reg.CRITICAL_DAC_NEGATIVE] >> 8)),
        )
        flags = INA209Status.NONE
        for flag, exceeded in checks:
            if exceeded:
                flags |= flag
        return flags

    def _shunt_mv(self) -> float:
        # The critical comparator is analog: it sees the real shunt voltage, not the saturated ADC code.
        return self.current_a * self.shunt_ohms * 1000.0


class SimINA209Bus:
    """An smbus2-shaped bus with simulated INA209 chips at their addresses."""

    def __init__(self, address: int | None = 0x40, shunt_ohms: float = 0.1) -> None:
        self.chips: dict[int, SimINA209Chip] = {}
        self.disconnected = False
        self.closed = False
        self._failures_left = 0
        self._lock = threading.Lock()
        if address is not None:
            self.add_chip(address, shunt_ohms)

    def add_chip(self, address: int, shunt_ohms: float = 0.1) -> SimINA209Chip:
        """Solder another chip onto the bus."""
        if address in self.chips:
            raise ValueError(f"an INA209 already sits at {address:#04x}")
        self.chips[address] = SimINA209Chip(shunt_ohms)
        return self.chips[address]

    def chip(self, address: int | None = None) -> SimINA209Chip:
        """The chip at ``address`` (or the only chip on the bus)."""
        if address is None:
            if len(self.chips) != 1:
                raise ValueError("several chips on this bus: name the address")
            return next(iter(self.chips.values()))
        return self.chips[address]

    def set_conditions(self, current_a: float, bus_voltage_v: float, address: int | None = None) -> None:
        """Set the physical conditions of one chip."""
        self.chip(address).set_conditions(current_a, bus_voltage_v)

    def power_cycle(self, address: int | None = None) -> None:
        """Power-cycle one chip (all registers back to reset values)."""
        self.chip(address).power_cycle()

    def fail_next(self, n: int) -> None:
        """Make the next ``n`` transfers fail with ``OSError`` (a glitch on the wire)."""
        with self._lock:
            self._failures_left = n

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        """SMBus read word: the chip sends MSB first, SMBus assembles LSB first ⇒ swapped."""
        return reg.swap16(self._transfer(i2c_addr, register).read_register(register))

    def write_word_data(self, i2c_addr: int, register: int, value: int, force: bool | None = None) -> None:
        """SMBus write word: sent LSB first, the chip takes the first byte as MSB ⇒ swapped."""
        self._transfer(i2c_addr, register).write_register(register, reg.swap16(value & 0xFFFF))

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int, force: bool | None = None) -> list[int]:
        """Raw read of a register's bytes in wire order (MSB, LSB)."""
        if not 1 <= length <= 2:
            raise OSError(errno.EIO, "INA209 registers are 2 bytes")
        value = self._transfer(i2c_addr, register).read_register(register)
        return [value >> 8, value & 0xFF][:length]

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int], force: bool | None = None) -> None:
        """Raw write of a register's bytes in wire order (MSB, LSB)."""
        if len(data) != 2:
            raise OSError(errno.EIO, "INA209 registers take exactly 2 bytes")
        self._transfer(i2c_addr, register).write_register(register, (data[0] & 0xFF) << 8 | data[1] & 0xFF)

    def close(self) -> None:
        """Mirror ``SMBus.close()``."""
        self.closed = True

    def _transfer(self, address: int, register: int) -> SimINA209Chip:
        with self._lock:
            if self.disconnected or address not in self.chips:
                raise OSError(errno.EREMOTEIO, f"no ACK from {address:#04x}")
            if self._failures_left > 0:
                self._failures_left -= 1
                raise OSError(errno.EREMOTEIO, f"transfer to {address:#04x} failed")
        if not 0 <= register < reg.REGISTER_COUNT:
            raise OSError(errno.EREMOTEIO, f"register {register:#04x} does not exist")
        return self.chips[address]


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
