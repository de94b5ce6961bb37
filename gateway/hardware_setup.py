"""Kept for callers not yet updated: ``Settings.hardware`` is already the drivers' ``HardwareConfig``.

Remove once ``gateway/app.py`` passes ``settings.hardware`` to ``open_hardware`` directly (issue 16).
"""

from __future__ import annotations

from drivers.config import HardwareConfig


def hardware_config(section: HardwareConfig) -> HardwareConfig:
    """The drivers' HardwareConfig for this gateway: the ``[hardware]`` settings themselves."""
    return section
