"""INA209 scaling helpers against the datasheet's own numbers."""

from __future__ import annotations

import pytest

from drivers.ina209_registers import (
    calibration_value,
    choose_current_lsb,
    swap16,
    to_register16,
    to_signed16,
)


def test_datasheet_calibration_example_1() -> None:
    # SBOS403B "Calibration Example 1": R = 0.5 Ω, Current_LSB chosen 20 µA
    # Cal = trunc(0.04096 / (20e-6 × 0.5)) = trunc(4096.0) = 4096
    assert calibration_value(20e-6, 0.5) == 4096


def test_default_pump_shunt_gives_round_lsb_and_cal_4096() -> None:
    # Max_Expected_I = 2 A ⇒ Minimum_LSB = 2 / 32767 = 61.04 µA ⇒ next round value 100 µA
    assert choose_current_lsb(2.0) == pytest.approx(100e-6, rel=1e-15)
    # Cal = trunc(0.04096 / (100e-6 × 0.1)) = 4096 (float noise would give 4095 without care)
    assert calibration_value(100e-6, 0.1) == 4096


@pytest.mark.parametrize(
    ("max_amps", "lsb"),
    [(0.3, 10e-6), (1.0, 50e-6), (3.2, 100e-6), (5.0, 200e-6), (10.0, 500e-6), (30.0, 1e-3)],
)
def test_lsb_is_the_smallest_round_value_above_minimum(max_amps: float, lsb: float) -> None:
    # e.g. 0.3 A / 32767 = 9.16 µA ⇒ 10 µA; 3.2 A / 32767 = 97.7 µA ⇒ 100 µA; 5 A ⇒ 152.6 µA ⇒ 200 µA
    assert choose_current_lsb(max_amps) == pytest.approx(lsb, rel=1e-12)


def test_calibration_out_of_range_is_refused() -> None:
    # 0.04096 / (1e-6 × 0.01) = 4_096_000 does not fit 16 bits
    with pytest.raises(ValueError, match=r"out of 1\.\.65535"):
        calibration_value(1e-6, 0.01)


def test_byte_swap_and_twos_complement() -> None:
    assert swap16(0x399F) == 0x9F39
    assert swap16(swap16(0xABCD)) == 0xABCD
    assert to_signed16(0xEC78) == -5000  # 0x10000 - 5000 = 60536 = 0xEC78
    assert to_signed16(0x8300) == -32000  # datasheet: -320 mV full scale is 8300h
    assert to_register16(-15000) == 0xC568  # 65536 - 15000 = 50536
    with pytest.raises(ValueError):
        to_register16(40000)
