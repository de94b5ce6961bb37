"""The INA209 driver against the register-level simulator: values worked out from the datasheet formulas.

Defaults: R_shunt = 0.1 Ω, Max_Expected_I = 2 A ⇒ Current_LSB = 100 µA, Cal = 4096, Power_LSB = 2 mW.
"""

from __future__ import annotations

import logging
import threading

import pytest

from drivers.current_monitor import AsyncCurrentMonitor, BusExecutors
from drivers.errors import SensorUnavailableError
from drivers.ina209 import INA209
from drivers.ina209_registers import INA209Status
from drivers.sim_ina209 import SimINA209Bus


@pytest.fixture
def bus() -> SimINA209Bus:
    return SimINA209Bus(address=0x40, shunt_ohms=0.1)


@pytest.fixture
def ina(bus: SimINA209Bus) -> INA209:
    driver = INA209(bus, address=0x40, shunt_ohms=0.1, max_expected_amps=2.0)
    driver.configure()
    return driver


def test_configure_writes_configuration_and_calibration(bus: SimINA209Bus, ina: INA209) -> None:
    chip = bus.chip()
    # 32 V (bit 13) | PGA ÷8 (bits 12..11 = 11) | BADC 12-bit (0011 << 7) | SADC 12-bit ×8 (1011 << 3) | mode 111
    assert chip.peek(0x00) == 0x2000 | 0x1800 | 0x0180 | 0x0058 | 0x7 == 0x39DF
    assert chip.peek(0x16) == 4096
    assert ina.current_lsb_a == pytest.approx(100e-6)
    assert ina.power_lsb_w == pytest.approx(2e-3)


def test_read_converts_registers_to_si_units(bus: SimINA209Bus, ina: INA209) -> None:
    bus.set_conditions(current_a=1.234, bus_voltage_v=12.0)
    reading = ina.read()
    assert reading.shunt_voltage_v == pytest.approx(0.1234)  # 12340 × 10 µV
    assert reading.bus_voltage_v == pytest.approx(12.0)  # (24000 >> 3) × 4 mV
    assert reading.current_a == pytest.approx(1.234)  # 12340 × 100 µA
    assert reading.power_w == pytest.approx(14.808)  # 7404 × 2 mW
    assert reading.conversion_ready
    assert not reading.math_overflow
    assert not reading.warning and not reading.critical


def test_negative_current(bus: SimINA209Bus, ina: INA209) -> None:
    bus.set_conditions(current_a=-0.5, bus_voltage_v=12.0)
    reading = ina.read()
    assert reading.shunt_voltage_v == pytest.approx(-0.05)  # 0xEC78 = -5000 × 10 µV
    assert reading.current_a == pytest.approx(-0.5)  # -5000 × 100 µA
    assert reading.power_w == pytest.approx(6.0)  # 3000 × 2 mW, power is unsigned


def test_status_register_is_read_exactly_once_per_cycle(bus: SimINA209Bus, ina: INA209) -> None:
    chip = bus.chip()
    before = chip.read_counts[0x01]
    ina.read()
    ina.read()
    assert chip.read_counts[0x01] - before == 2


def test_set_limits_programs_the_chip_registers(bus: SimINA209Bus, ina: INA209) -> None:
    ina.set_limits(warning_amps=1.5, critical_amps=2.0, power_limit_w=24.0)
    chip = bus.chip()
    assert chip.peek(0x0C) == 15000  # 1.5 A × 0.1 Ω = 150 mV = 15000 × 10 µV
    assert chip.peek(0x0D) == 0x10000 - 15000 == 0xC568  # -150 mV, two's complement
    assert chip.peek(0x14) == 200 << 8 == 0xC800  # 2.0 A × 0.1 Ω = 200 mV, 1 mV LSB in bits 15..8
    assert chip.peek(0x15) == 0xC800
    assert chip.peek(0x11) == 12000  # 24 W / 2 mW
    assert chip.peek(0x02) & 0x0007 == 0x0007  # Warning, Overlimit, Critical pins enabled


def test_limits_trip_flags_and_the_chip_pins(bus: SimINA209Bus, ina: INA209) -> None:
    ina.set_limits(warning_amps=1.5, critical_amps=2.0)
    chip = bus.chip()
    bus.set_conditions(current_a=1.6, bus_voltage_v=12.0)
    reading = ina.read()
    assert reading.warning and not reading.critical
    assert INA209Status.WARNING_SHUNT_POSITIVE in reading.status
    assert chip.warning_pin_asserted and not chip.critical_pin_asserted
    bus.set_conditions(current_a=2.1, bus_voltage_v=12.0)  # 210 mV > 200 mV critical DAC
    reading = ina.read()
    assert reading.critical
    assert INA209Status.CRITICAL_SHUNT_POSITIVE in reading.status
    assert chip.critical_pin_asserted  # trips in hardware, whatever this process does


def test_power_over_limit_counts_as_critical(bus: SimINA209Bus, ina: INA209) -> None:
    ina.set_limits(warning_amps=1.5, critical_amps=2.0, power_limit_w=24.0)
    bus.set_conditions(current_a=1.0, bus_voltage_v=30.0)
    # Power = 10000 × 7500 / 5000 = 15000 counts = 30 W > 24 W (12000 counts)
    reading = ina.read()
    assert reading.power_w == pytest.approx(30.0)
    assert INA209Status.OVERLIMIT_POWER in reading.status
    assert reading.critical
    assert bus.chip().overlimit_pin_asserted


def test_math_overflow_is_reported() -> None:
    bus = SimINA209Bus(shunt_ohms=0.1)
    # 0.3 A / 32767 = 9.16 µA ⇒ Current_LSB 10 µA ⇒ Cal = 0.04096 / (10e-6 × 0.1) = 40960
    ina = INA209(bus, shunt_ohms=0.1, max_expected_amps=0.3)
    ina.configure()
    assert bus.chip().peek(0x16) == 40960
    bus.set_conditions(current_a=3.0, bus_voltage_v=12.0)
    # Current = 30000 × 40960 / 4096 = 300000 > 32767 ⇒ OVF, register pinned at 32767
    reading = ina.read()
    assert reading.math_overflow
    assert reading.current_a == pytest.approx(32767 * 10e-6)


def test_shunt_saturation_is_flagged(bus: SimINA209Bus, ina: INA209) -> None:
    bus.set_conditions(current_a=4.0, bus_voltage_v=12.0)  # 400 mV > ±320 mV range
    reading = ina.read()
    assert reading.shunt_saturated
    assert reading.shunt_voltage_v == pytest.approx(0.32)


def test_power_loss_is_detected_rearmed_and_counted(
    bus: SimINA209Bus, ina: INA209, caplog: pytest.LogCaptureFixture
) -> None:
    ina.set_limits(warning_amps=1.5, critical_amps=2.0)
    bus.set_conditions(current_a=1.234, bus_voltage_v=12.0)
    bus.power_cycle()  # calibration reads 0, configuration back to 399Fh, limits and pin enables gone
    with caplog.at_level(logging.WARNING), pytest.raises(SensorUnavailableError, match="re-armed"):
        ina.read()  # this cycle's current register is not trustworthy: never report it as 0
    assert ina.rearm_count == 1
    assert len([r for r in caplog.records if "re-arming" in r.getMessage()]) == 1
    chip = bus.chip()
    assert chip.peek(0x00) == 0x39DF
    assert chip.peek(0x16) == 4096
    assert chip.peek(0x0C) == 15000
    assert chip.peek(0x14) == 0xC800
    assert chip.peek(0x02) & 0x7 == 0x7
    assert ina.read().current_a == pytest.approx(1.234)
    assert ina.rearm_count == 1


def test_unconfigured_chip_is_configured_by_the_first_read(bus: SimINA209Bus) -> None:
    ina = INA209(bus)
    bus.set_conditions(current_a=0.8, bus_voltage_v=24.0)
    with pytest.raises(SensorUnavailableError, match="configured just now"):
        ina.read()
    assert ina.rearm_count == 0
    assert ina.read().current_a == pytest.approx(0.8)


def test_half_written_limits_are_completed_by_the_next_read(bus: SimINA209Bus, ina: INA209) -> None:
    bus.set_conditions(current_a=1.0, bus_voltage_v=12.0)
    bus.fail_next(1)  # the first limit register write is lost on the wire
    with pytest.raises(SensorUnavailableError):
        ina.set_limits(warning_amps=1.5, critical_amps=2.0)
    with pytest.raises(SensorUnavailableError, match="configured just now"):
        ina.read()  # configures from scratch, limits included; not a power-loss re-arm
    assert ina.rearm_count == 0
    assert bus.chip().peek(0x0C) == 15000
    assert bus.chip().peek(0x02) & 0x7 == 0x7
    assert ina.read().current_a == pytest.approx(1.0)


def test_bus_errors_become_sensor_unavailable_never_zero(bus: SimINA209Bus, ina: INA209) -> None:
    bus.set_conditions(current_a=1.0, bus_voltage_v=12.0)
    bus.fail_next(1)
    with pytest.raises(SensorUnavailableError, match="I2C error") as info:
        ina.read()
    assert isinstance(info.value.__cause__, OSError)
    bus.disconnected = True
    with pytest.raises(SensorUnavailableError):
        ina.read()
    bus.disconnected = False
    assert ina.read().current_a == pytest.approx(1.0)


def test_peaks_and_clear_peaks(bus: SimINA209Bus, ina: INA209) -> None:
    ina.clear_peaks()
    for amps in (0.5, 1.6, -0.2, 0.9):
        bus.set_conditions(current_a=amps, bus_voltage_v=12.0)
    peaks = ina.read_peaks()
    assert peaks.shunt_max_v == pytest.approx(0.16)
    assert peaks.shunt_min_v == pytest.approx(-0.02)
    assert peaks.bus_max_v == pytest.approx(12.0)
    assert peaks.power_max_w == pytest.approx(9600 * 2e-3)  # 16000 × 3000 / 5000 = 9600 counts
    ina.clear_peaks()
    assert bus.chip().peek(0x07) == 0x8000
    assert bus.chip().peek(0x0B) == 0


def test_reset_reconfigures_without_counting_a_rearm(bus: SimINA209Bus, ina: INA209) -> None:
    ina.set_limits(1.5, 2.0)
    ina.reset()
    assert bus.chip().peek(0x16) == 4096
    assert bus.chip().peek(0x0C) == 15000
    assert ina.rearm_count == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": 0x39}, "outside 0x40..0x4F"),
        ({"shunt_ohms": 0.1, "max_expected_amps": 4.0}, "exceeds"),  # 400 mV > 320 mV
        ({"shunt_ohms": 0.0}, "shunt_ohms"),
    ],
)
def test_invalid_construction_is_refused(kwargs: dict[str, float], message: str, bus: SimINA209Bus) -> None:
    with pytest.raises(ValueError, match=message):
        INA209(bus, **kwargs)  # type: ignore[arg-type]


def test_limits_beyond_the_critical_dac_are_refused(ina: INA209) -> None:
    with pytest.raises(ValueError, match="255 mV"):
        ina.set_limits(warning_amps=1.0, critical_amps=3.0)  # 300 mV > 255 mV DAC
    with pytest.raises(ValueError, match="warning_amps <= critical_amps"):
        ina.set_limits(warning_amps=2.0, critical_amps=1.0)


async def test_async_monitor_reads_on_the_bus_thread(bus: SimINA209Bus, ina: INA209) -> None:
    executors = BusExecutors()
    try:
        monitor = AsyncCurrentMonitor(ina, executors.get(1))
        bus.set_conditions(current_a=0.75, bus_voltage_v=12.0)
        reading = await monitor.read()
        assert reading.current_a == pytest.approx(0.75)
        assert await monitor.run(lambda: threading.current_thread().name.startswith("i2c-1"))
        assert executors.get(1) is executors.get(1)  # one executor per bus
        bus.disconnected = True
        with pytest.raises(SensorUnavailableError):
            await monitor.read()
    finally:
        executors.shutdown()
