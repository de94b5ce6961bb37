"""Errors raised at the hardware boundary, in domain words."""

from __future__ import annotations


class HardwareUnavailableError(RuntimeError):
    """A device the configuration asks for is not there (no GPIO chip, no I2C bus, ...)."""


class SensorUnavailableError(RuntimeError):
    """A sensor could not deliver a trustworthy reading this time; never read it as 0."""


class LinkDownError(RuntimeError):
    """A serial link is not connected, so nothing can be sent on it."""


class RelayError(RuntimeError):
    """One or more relay coils could not be driven to the requested state."""
