"""INA209 register map, bit fields and scaling from TI datasheet SBOS403B (pure; shared with the sim).

Every register is 16 bits, transferred most-significant byte first (big-endian). An SMBus word transfer
is defined little-endian, so a word read through smbus2 arrives byte-swapped: ``swap16`` fixes both ways.

Scaling (datasheet "Programming the INA209 power measurement engine"):
- shunt voltage: two's complement, LSB 10 µV, ±32000 counts at the ÷8 PGA (±320 mV);
- bus voltage: BD12..BD0 in bits 15..3, LSB 4 mV, bits 2..0 unused (unlike the INA219, the INA209
  reports conversion-ready and math-overflow in the Status register, bits 5 and 3);
- Cal = trunc(0.04096 / (Current_LSB × R_shunt)); Current = Shunt × Cal / 4096 (two's complement);
- Power = Current × Bus / 5000 with Power_LSB = 20 × Current_LSB (unsigned).
"""

from __future__ import annotations

import enum
import math
from decimal import Decimal

CONFIGURATION = 0x00
STATUS = 0x01
SMBUS_ALERT_MASK = 0x02
SHUNT_VOLTAGE = 0x03
BUS_VOLTAGE = 0x04
POWER = 0x05
CURRENT = 0x06
SHUNT_POSITIVE_PEAK = 0x07
SHUNT_NEGATIVE_PEAK = 0x08
BUS_MAX_PEAK = 0x09
BUS_MIN_PEAK = 0x0A
POWER_PEAK = 0x0B
SHUNT_POSITIVE_WARNING = 0x0C
SHUNT_NEGATIVE_WARNING = 0x0D
POWER_WARNING = 0x0E
BUS_OVER_VOLTAGE_WARNING = 0x0F
BUS_UNDER_VOLTAGE_WARNING = 0x10
POWER_OVER_LIMIT = 0x11
BUS_OVER_VOLTAGE_OVER_LIMIT = 0x12
BUS_UNDER_VOLTAGE_OVER_LIMIT = 0x13
CRITICAL_DAC_POSITIVE = 0x14
CRITICAL_DAC_NEGATIVE = 0x15
CALIBRATION = 0x16
REGISTER_COUNT = 0x17

READ_ONLY = frozenset({STATUS, SHUNT_VOLTAGE, BUS_VOLTAGE, POWER, CURRENT})
PEAK_REGISTERS = (SHUNT_POSITIVE_PEAK, SHUNT_NEGATIVE_PEAK, BUS_MAX_PEAK, BUS_MIN_PEAK, POWER_PEAK)

CONFIG_POR = 0x399F  # 32 V range, PGA ÷8, 12-bit bus and shunt, shunt+bus continuous
# Power-on reset values (datasheet Table 2); every register not listed resets to 0x0000.
POWER_ON_RESET: dict[int, int] = {
    CONFIGURATION: CONFIG_POR,
    SHUNT_POSITIVE_PEAK: 0x8000,
    SHUNT_NEGATIVE_PEAK: 0x7FFF,
    BUS_MIN_PEAK: 0xFFF8,
}

CONFIG_RESET = 1 << 15
CONFIG_BRNG_32V = 1 << 13
PGA_SHIFT = 11
BADC_SHIFT = 7
SADC_SHIFT = 3
MODE_MASK = 0x7
PGA_FULL_SCALE_COUNTS = (4000, 8000, 16000, 32000)  # ±40, ±80, ±160, ±320 mV in 10 µV counts
PGA_DIV8 = 3
ADC_12BIT = 0b0011
ADC_12BIT_8_SAMPLES = 0b1011
MODE_SHUNT_BUS_CONTINUOUS = 0b111
MODES_OFF = frozenset({0b000, 0b100})  # power-down, ADC off

# SMBus Alert Mask/Enable register: low bits enable the Warning, Overlimit and Critical pins.
WARNING_PIN_ENABLE = 1 << 0
OVERLIMIT_PIN_ENABLE = 1 << 1
CRITICAL_PIN_ENABLE = 1 << 2
PIN_ENABLES = WARNING_PIN_ENABLE | OVERLIMIT_PIN_ENABLE | CRITICAL_PIN_ENABLE

SHUNT_LSB_V = 10e-6
BUS_LSB_V = 4e-3
BUS_SHIFT = 3
CRITICAL_DAC_LSB_V = 1e-3
CRITICAL_DAC_SHIFT = 8
CRITICAL_DAC_MAX = 0xFF
CAL_NUMERATOR = 0.04096
CURRENT_DIVISOR = 4096
POWER_DIVISOR = 5000
POWER_LSB_FACTOR = 20


class INA209Status(enum.IntFlag):
    """Status register 01h bits; the register clears on read, so read it once per cycle."""

    NONE = 0
    MATH_OVERFLOW = 1 << 3  # OVF
    SMBUS_ALERT = 1 << 4  # SMBA
    CONVERSION_READY = 1 << 5  # CNVR
    CRITICAL_SHUNT_NEGATIVE = 1 << 6  # CRIT-
    CRITICAL_SHUNT_POSITIVE = 1 << 7  # CRIT+
    OVERLIMIT_POWER = 1 << 8  # OLP
    OVERLIMIT_BUS_UNDER_VOLTAGE = 1 << 9  # OLUV
    OVERLIMIT_BUS_OVER_VOLTAGE = 1 << 10  # OLOV
    WARNING_SHUNT_NEGATIVE = 1 << 11  # WS-
    WARNING_SHUNT_POSITIVE = 1 << 12  # WS+
    WARNING_POWER = 1 << 13  # WP
    WARNING_BUS_UNDER_VOLTAGE = 1 << 14  # WUV
    WARNING_BUS_OVER_VOLTAGE = 1 << 15  # WOV


WARNING_FLAGS = (
    INA209Status.WARNING_BUS_OVER_VOLTAGE
    | INA209Status.WARNING_BUS_UNDER_VOLTAGE
    | INA209Status.WARNING_POWER
    | INA209Status.WARNING_SHUNT_POSITIVE
    | INA209Status.WARNING_SHUNT_NEGATIVE
)
OVERLIMIT_FLAGS = (
    INA209Status.OVERLIMIT_BUS_OVER_VOLTAGE | INA209Status.OVERLIMIT_BUS_UNDER_VOLTAGE | INA209Status.OVERLIMIT_POWER
)
CRITICAL_FLAGS = INA209Status.CRITICAL_SHUNT_POSITIVE | INA209Status.CRITICAL_SHUNT_NEGATIVE


def swap16(word: int) -> int:
    """Swap the two bytes of a 16-bit word (SMBus little-endian word <-> big-endian register)."""
    return ((word & 0xFF) << 8) | ((word >> 8) & 0xFF)


def to_signed16(value: int) -> int:
    """Interpret a 16-bit register value as two's complement."""
    return value - 0x10000 if value & 0x8000 else value


def to_register16(value: int) -> int:
    """Encode a signed integer in -32768..32767 as a 16-bit two's-complement register value."""
    if not -0x8000 <= value <= 0x7FFF:
        raise ValueError(f"{value} does not fit a signed 16-bit register")
    return value & 0xFFFF


def choose_current_lsb(max_expected_amps: float) -> float:
    """Smallest round (1/2/5 × 10^n) Current_LSB ≥ Max_Expected_I / 32767 (datasheet Minimum_LSB)."""
    if not max_expected_amps > 0:
        raise ValueError("max_expected_amps must be > 0")
    minimum = Decimal(repr(max_expected_amps)) / Decimal(32767)
    exponent = math.floor(math.log10(float(minimum)))
    for exp in (exponent, exponent + 1):
        for mantissa in (1, 2, 5):
            candidate = Decimal(mantissa).scaleb(exp)
            if candidate >= minimum:
                return float(candidate)
    raise AssertionError("unreachable: 10^(e+1) ≥ minimum")  # pragma: no cover


def calibration_value(current_lsb_a: float, shunt_ohms: float) -> int:
    """Cal = trunc(0.04096 / (Current_LSB × R_shunt)), rounded first to 6 decimals to shed float noise."""
    cal = math.trunc(round(CAL_NUMERATOR / (current_lsb_a * shunt_ohms), 6))
    if not 1 <= cal <= 0xFFFF:
        raise ValueError(f"calibration {cal} out of 1..65535 (current LSB {current_lsb_a} A, shunt {shunt_ohms} Ω)")
    return cal
