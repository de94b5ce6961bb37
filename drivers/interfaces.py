"""The hardware as the gateway sees it: ``Relay``, ``CurrentMonitor``, ``Watchdog``.

The gateway's safety and water code are typed against these Protocols, not against the concrete drivers
(``PumpRelay``, ``AsyncCurrentMonitor``, ``RelayWatchdog`` satisfy them structurally), so a test or a
simulator can stand in at this seam without touching GPIO or I2C.
"""

from __future__ import annotations

from typing import Protocol

from drivers.ina209 import INA209Reading
from drivers.relay_logic import FailSafeMode


class Relay(Protocol):
    """One pump's relay coil, spoken in pump states (ON/OFF), not coil states."""

    @property
    def name(self) -> str:
        """The relay channel's name from ``[hardware]``."""
        ...

    @property
    def fail_safe_mode(self) -> FailSafeMode:
        """``NC`` (pump runs with the coil de-energised) or ``NO``."""
        ...

    @property
    def pump_on(self) -> bool:
        """Whether the contact currently lets the pump run (what we command, not a measurement)."""
        ...

    @property
    def coil_energised(self) -> bool:
        """Whether the coil is driven."""
        ...

    def set_pump(self, on: bool) -> None:
        """Switch the pump ON or OFF; raises ``RelayError`` if the coils are held released."""
        ...


class CurrentMonitor(Protocol):
    """A pump's current monitor; reading never blocks the event loop."""

    async def read(self) -> INA209Reading:
        """One reading; raises ``SensorUnavailableError`` instead of ever returning a made-up 0."""
        ...


class Watchdog(Protocol):
    """The relay watchdog: fed by every healthy safety tick, releases every coil when the feeding stops."""

    @property
    def tripped(self) -> bool:
        """True while the watchdog holds every coil released (no start may be granted)."""
        ...

    def feed(self) -> None:
        """Called by the safety loop after each healthy tick."""
        ...

    def ready(self) -> None:
        """Tell the service manager that start-up is complete."""
        ...

    def stopping(self) -> None:
        """Tell the service manager that a clean shutdown has begun."""
        ...
