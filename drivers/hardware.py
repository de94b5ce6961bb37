"""Open every configured device at once: relays, heartbeat pin, INA209 monitors (real or simulated).

``backend="real"`` fails loudly with ``HardwareUnavailableError`` naming the device when GPIO or an I2C
bus is missing; it never substitutes fakes. An INA209 that exists on its bus but does not answer at
start-up is logged and left to its monitor, which configures it as soon as it answers (a reading is
"unavailable" until then). ``backend="sim"`` uses gpiozero's MockFactory and ``SimINA209Bus`` and exposes
the simulated chips so the demo/simulator can set their physical conditions.

``open_hardware`` does blocking I/O: call it before the event loop starts or via ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Protocol

import smbus2
from gpiozero import OutputDevice

from drivers.config import HardwareConfig, INA209Config
from drivers.current_monitor import AsyncCurrentMonitor, BusExecutors
from drivers.errors import HardwareUnavailableError, SensorUnavailableError
from drivers.ina209 import INA209, SMBusLike
from drivers.ports import Clock, SystemClock
from drivers.relay import PinFactory, RelayBank, make_pin_factory, open_relay_bank
from drivers.sdnotify_client import SystemdNotifier
from drivers.sim_ina209 import SimINA209Bus, SimINA209Chip
from drivers.watchdog import HeartbeatPin, RelayWatchdog

log = logging.getLogger(__name__)


class HeartbeatOutput(HeartbeatPin, Protocol):
    """The heartbeat GPIO: toggled by the watchdog, closed with the hardware."""

    def close(self) -> None:
        """Free the pin."""
        ...


class I2CBus(SMBusLike, Protocol):
    """An opened I2C bus (``smbus2.SMBus`` or the simulator's ``SimINA209Bus``)."""

    def close(self) -> None:
        """Close the bus device."""
        ...


@dataclass
class Hardware:
    """Opened devices; ``close()`` puts every coil in its fail-safe state and frees everything."""

    config: HardwareConfig
    relays: RelayBank
    heartbeat: HeartbeatOutput | None
    pin_factory: PinFactory | None
    ina209: dict[str, INA209] = field(default_factory=dict)
    monitors: dict[str, AsyncCurrentMonitor] = field(default_factory=dict)
    sim_buses: dict[int, SimINA209Bus] = field(default_factory=dict)
    sim_chips: dict[str, SimINA209Chip] = field(default_factory=dict)
    _cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    def make_watchdog(
        self, clock: Clock, notifier: SystemdNotifier, supervise_in_thread: bool | None = None
    ) -> RelayWatchdog:
        """The relay watchdog over these relays and this heartbeat pin.

        Its supervisor is a thread (acts while the event loop is blocked) whenever time is real: by default
        with ``SystemClock``; a simulated clock keeps it on the loop, where simulated time is meaningful.
        """
        threaded = isinstance(clock, SystemClock) if supervise_in_thread is None else supervise_in_thread
        return RelayWatchdog(
            self.relays, self.heartbeat, notifier, clock, self.config.watchdog.timeout_s, supervise_in_thread=threaded
        )

    def close(self) -> None:
        """Release every coil, close pins, stop bus threads, close buses."""
        self._cleanup.close()


def open_hardware(cfg: HardwareConfig) -> Hardware:
    """Open relays, heartbeat and INA209 monitors for ``cfg``; undo everything if one step fails."""
    with contextlib.ExitStack() as stack:
        factory: PinFactory | None = None
        if cfg.relays or cfg.watchdog.heartbeat_pin is not None:
            factory = make_pin_factory(cfg.backend)  # "real" without GPIO fails here, loudly
            stack.callback(factory.close)
        relays = open_relay_bank(cfg.relays, cfg.backend, pin_factory=factory) if cfg.relays else RelayBank([])
        stack.callback(relays.close)
        heartbeat = _open_heartbeat(cfg, factory)
        if heartbeat is not None:
            stack.callback(heartbeat.close)
        executors = BusExecutors()
        stack.callback(executors.shutdown)
        hw = Hardware(cfg, relays, heartbeat, factory)
        buses: dict[int, I2CBus] = {}
        for monitor_cfg in cfg.ina209:
            if monitor_cfg.bus not in buses:
                buses[monitor_cfg.bus] = _open_bus(cfg, monitor_cfg, hw)
                stack.callback(buses[monitor_cfg.bus].close)
            driver = _open_monitor(monitor_cfg, buses[monitor_cfg.bus], hw)
            hw.ina209[monitor_cfg.key] = driver
            hw.monitors[monitor_cfg.key] = AsyncCurrentMonitor(driver, executors.get(monitor_cfg.bus))
        hw._cleanup = stack.pop_all()
        return hw


def _open_heartbeat(cfg: HardwareConfig, factory: PinFactory | None) -> HeartbeatOutput | None:
    pin = cfg.watchdog.heartbeat_pin
    if pin is None:
        return None
    device: HeartbeatOutput = OutputDevice(pin, initial_value=False, pin_factory=factory)
    return device


def _open_bus(cfg: HardwareConfig, monitor_cfg: INA209Config, hw: Hardware) -> I2CBus:
    if cfg.backend == "sim":
        sim = SimINA209Bus(address=None)
        hw.sim_buses[monitor_cfg.bus] = sim
        return sim
    device = f"/dev/i2c-{monitor_cfg.bus}"
    try:
        bus: I2CBus = smbus2.SMBus(monitor_cfg.bus)
        return bus
    except OSError as exc:
        raise HardwareUnavailableError(
            f"I2C bus {device} for INA209 {monitor_cfg.key} cannot be opened ({exc}); enable I2C "
            "(raspi-config nonint do_i2c 0) and run as a member of the i2c group"
        ) from exc


def _open_monitor(monitor_cfg: INA209Config, bus: I2CBus, hw: Hardware) -> INA209:
    if isinstance(bus, SimINA209Bus):
        hw.sim_chips[monitor_cfg.key] = bus.add_chip(monitor_cfg.address, monitor_cfg.shunt_ohms)
    driver = INA209(
        bus,
        monitor_cfg.address,
        monitor_cfg.shunt_ohms,
        monitor_cfg.max_expected_amps,
        name=f"INA209 {monitor_cfg.key} (i2c-{monitor_cfg.bus} {monitor_cfg.address:#04x})",
    )
    if monitor_cfg.warning_amps is not None and monitor_cfg.critical_amps is not None:
        driver.use_limits(monitor_cfg.warning_amps, monitor_cfg.critical_amps)  # programmed by configure()
    try:
        driver.configure()
    except SensorUnavailableError as exc:
        log.error("%s not answering at start-up (%s); readings unavailable until it does", driver.name, exc)
    return driver
