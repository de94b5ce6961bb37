"""The register-level INA209 simulator behaves like the datasheet says, seen through smbus2-shaped calls.

Values are worked out by hand in the comments; addresses and bits are written as literal numbers on
purpose, so a wrong constant in the production register map cannot hide behind itself.
"""

from __future__ import annotations

import errno

import pytest

from drivers.sim_ina209 import SimINA209Bus

ADDR = 0x40


def word(bus: SimINA209Bus, register: int) -> int:
    """Read a register the way a driver must: SMBus word, then swap to big-endian."""
    raw = bus.read_word_data(ADDR, register)
    return ((raw & 0xFF) << 8) | (raw >> 8)


def put(bus: SimINA209Bus, register: int, value: int) -> None:
    """Write a register as raw bytes in wire order, MSB first."""
    bus.write_i2c_block_data(ADDR, register, [value >> 8, value & 0xFF])


def signed(value: int) -> int:
    return value - 0x10000 if value & 0x8000 else value


def test_power_on_reset_values_arrive_byte_swapped_over_smbus() -> None:
    bus = SimINA209Bus()
    # Configuration POR 399Fh: the chip sends 39h then 9Fh; SMBus puts the first byte low ⇒ 0x9F39
    assert bus.read_word_data(ADDR, 0x00) == 0x9F39
    assert bus.read_i2c_block_data(ADDR, 0x00, 2) == [0x39, 0x9F]
    assert bus.read_word_data(ADDR, 0x16) == 0x0000  # calibration POR 0
    assert bus.read_word_data(ADDR, 0x0C) == 0x0000  # limits POR 0
    # peak registers reset to 8000h / 7FFFh / FFF8h; seen after a peak reset (the chip converts at once)
    for register, por_swapped in ((0x07, 0x0080), (0x08, 0xFF7F), (0x0A, 0xF8FF)):
        bus.write_word_data(ADDR, register, 0x0100)  # word 0x0001 on the wire is swapped to 0x0100
        assert bus.read_word_data(ADDR, register) == por_swapped


def test_calibration_zero_means_current_and_power_read_zero() -> None:
    bus = SimINA209Bus(shunt_ohms=0.1)
    bus.set_conditions(current_a=1.234, bus_voltage_v=12.0)
    # shunt: 1.234 A × 0.1 Ω = 123.4 mV = 12340 × 10 µV
    assert word(bus, 0x03) == 12340
    # bus: 12.0 V / 4 mV = 3000 counts, stored in bits 15..3 ⇒ 3000 << 3 = 24000
    assert word(bus, 0x04) == 24000
    # calibration register still 0 ⇒ Current = 12340 × 0 / 4096 = 0, Power = 0
    assert word(bus, 0x06) == 0
    assert word(bus, 0x05) == 0


def test_calibration_drives_current_and_power_registers() -> None:
    bus = SimINA209Bus(shunt_ohms=0.1)
    put(bus, 0x16, 4096)  # Cal for Current_LSB 100 µA on 0.1 Ω
    bus.set_conditions(current_a=1.234, bus_voltage_v=12.0)
    # Current = 12340 × 4096 / 4096 = 12340 (× 100 µA = 1.234 A)
    assert word(bus, 0x06) == 12340
    # Power = Current × Bus / 5000 = 12340 × 3000 / 5000 = 7404 (× 2 mW = 14.808 W)
    assert word(bus, 0x05) == 7404


def test_negative_shunt_voltage_is_twos_complement() -> None:
    bus = SimINA209Bus(shunt_ohms=0.1)
    put(bus, 0x16, 4096)
    bus.set_conditions(current_a=-0.5, bus_voltage_v=12.0)
    # -0.5 A × 0.1 Ω = -50 mV = -5000 counts = 0x10000 - 5000 = 0xEC78
    assert word(bus, 0x03) == 0xEC78
    assert word(bus, 0x06) == 0xEC78  # -5000 × 4096 / 4096
    # power register is unsigned: |-5000| × 3000 / 5000 = 3000
    assert word(bus, 0x05) == 3000


def test_shunt_adc_saturates_at_the_pga_range() -> None:
    bus = SimINA209Bus(shunt_ohms=0.1)
    bus.set_conditions(current_a=4.0, bus_voltage_v=12.0)  # 400 mV > 320 mV full scale at PGA ÷8
    assert word(bus, 0x03) == 0x7D00  # +32000 = +320 mV, datasheet "positive value hex = 7D00"
    bus.set_conditions(current_a=-4.0, bus_voltage_v=12.0)
    assert word(bus, 0x03) == 0x8300  # -32000, datasheet "negative value hex = 8300"
    put(bus, 0x00, 0x399F & ~0x1800)  # PGA bits 12..11 = 00 ⇒ gain 1, ±40 mV
    bus.set_conditions(current_a=0.5, bus_voltage_v=12.0)  # 50 mV > 40 mV
    assert word(bus, 0x03) == 4000


def test_math_overflow_sets_ovf_and_clamps_current() -> None:
    bus = SimINA209Bus(shunt_ohms=0.1)
    put(bus, 0x16, 40960)  # Current_LSB 10 µA
    bus.set_conditions(current_a=1.0, bus_voltage_v=12.0)
    # Current = 10000 × 40960 / 4096 = 100000 > 32767 ⇒ overflow, register pinned at 7FFFh
    assert word(bus, 0x06) == 0x7FFF
    assert word(bus, 0x01) & (1 << 3)  # OVF is status bit 3


def test_status_latches_until_read_and_clears_on_read() -> None:
    bus = SimINA209Bus(shunt_ohms=0.1)
    put(bus, 0x0C, 15000)  # shunt positive warning at 150 mV (1.5 A)
    put(bus, 0x0D, 0x8000)  # negative warning parked at the most negative value
    put(bus, 0x0F, 0xFFF8)  # bus over-voltage warning parked
    put(bus, 0x0E, 0xFFFF)  # power warning parked
    put(bus, 0x11, 0xFFFF)
    put(bus, 0x12, 0xFFF8)
    put(bus, 0x14, 0xFF00)  # critical DAC+ 255 mV
    put(bus, 0x15, 0xFF00)
    bus.set_conditions(current_a=1.0, bus_voltage_v=12.0)
    word(bus, 0x01)  # clear power-up flags
    assert word(bus, 0x01) == 0  # nothing violated, no conversion since the last read
    bus.set_conditions(current_a=1.6, bus_voltage_v=12.0)  # 160 mV > 150 mV: transient excursion
    bus.set_conditions(current_a=1.0, bus_voltage_v=12.0)  # back to normal before the poll
    status = word(bus, 0x01)
    assert status & (1 << 12)  # WS+ kept until read: the transient is not missed
    assert status & (1 << 5)  # CNVR
    assert word(bus, 0x01) == 0  # cleared by the read
    bus.set_conditions(current_a=1.6, bus_voltage_v=12.0)
    word(bus, 0x01)
    assert word(bus, 0x01) == 1 << 12  # still exceeded ⇒ sets again at once; CNVR stays cleared


def test_peak_registers_track_extremes_and_reset_by_writing_bit_0() -> None:
    bus = SimINA209Bus(shunt_ohms=0.1)
    put(bus, 0x16, 4096)
    for amps in (1.0, 1.6, -0.5, 0.2):
        bus.set_conditions(current_a=amps, bus_voltage_v=12.0)
    assert word(bus, 0x07) == 16000  # most positive shunt: 160 mV
    assert signed(word(bus, 0x08)) == -5000  # most negative: -50 mV
    assert word(bus, 0x0B) == 16000 * 3000 // 5000  # power peak 9600 at 1.6 A
    put(bus, 0x07, 0x0001)
    assert word(bus, 0x07) == 0x8000  # back to POR
    assert word(bus, 0x08) == 0xEC78  # untouched


def test_power_cycle_and_reset_bit_restore_datasheet_reset_values() -> None:
    bus = SimINA209Bus(shunt_ohms=0.1)
    put(bus, 0x00, 0x39DF)
    put(bus, 0x16, 4096)
    put(bus, 0x0C, 15000)
    bus.power_cycle()
    assert word(bus, 0x00) == 0x399F
    assert word(bus, 0x16) == 0
    assert word(bus, 0x0C) == 0
    put(bus, 0x16, 4096)
    put(bus, 0x00, 0x8000)  # RST bit: same as power-on reset
    assert word(bus, 0x16) == 0
    assert word(bus, 0x00) == 0x399F


def test_read_only_registers_ignore_writes() -> None:
    bus = SimINA209Bus(shunt_ohms=0.1)
    bus.set_conditions(current_a=1.0, bus_voltage_v=12.0)
    put(bus, 0x03, 0x1234)
    assert word(bus, 0x03) == 10000


def test_bus_failures_raise_oserror_like_a_real_bus() -> None:
    bus = SimINA209Bus()
    bus.fail_next(2)
    for _ in range(2):
        with pytest.raises(OSError) as info:
            bus.read_word_data(ADDR, 0x00)
        assert info.value.errno == errno.EREMOTEIO
    assert bus.read_word_data(ADDR, 0x00) == 0x9F39
    bus.disconnected = True
    with pytest.raises(OSError):
        bus.write_word_data(ADDR, 0x16, 0x0010)
    bus.disconnected = False
    with pytest.raises(OSError):
        bus.read_word_data(0x41, 0x00)  # nobody at 0x41


def test_alert_pins_follow_limits_once_enabled() -> None:
    bus = SimINA209Bus(shunt_ohms=0.1)
    chip = bus.chip()
    put(bus, 0x0C, 15000)
    put(bus, 0x14, 200 << 8)  # critical DAC+ 200 mV in bits 15..8
    put(bus, 0x15, 200 << 8)
    bus.set_conditions(current_a=2.1, bus_voltage_v=12.0)  # 210 mV
    assert not chip.critical_pin_asserted  # pins disabled at power-up
    put(bus, 0x02, 0x0007)  # enable Warning, Overlimit, Critical pins
    assert chip.critical_pin_asserted
    assert chip.warning_pin_asserted
    bus.set_conditions(current_a=-2.1, bus_voltage_v=12.0)  # -210 mV < -200 mV ⇒ CRIT-
    assert chip.critical_pin_asserted
    assert word(bus, 0x01) & (1 << 6)
    bus.set_conditions(current_a=1.0, bus_voltage_v=12.0)
    assert not chip.critical_pin_asserted
