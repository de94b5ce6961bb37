"""Automation settings: intervals, grace times, retention and the dosing constants, with key-path errors.

Read from an ``[automation]`` table (``Settings.automation`` as a plain mapping), e.g.::

    [automation]
    irrigation_grace_s = 1800
    [automation.dosing]
    mixing_delay_s = 300
    [automation.dosing.ph]
    hourly_cap_ml = 15
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from gateway.automation.dosing import DosingConfig, Tuning


class AutomationConfigError(ValueError):
    """An ``[automation]`` setting is invalid; ``path`` names the key."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class AutomationConfig:
    """Everything AutomationService needs besides the zones and recipes."""

    dosing: DosingConfig = field(default_factory=DosingConfig)
    dosing_interval_s: float = 15.0
    irrigation_grace_s: float = 1800.0
    aggregate_interval_s: float = 60.0
    aggregate_lateness_s: float = 600.0
    aggregate_chunk_rows: int = 50_000
    usage_rollup_interval_s: float = 300.0
    retention_interval_s: float = 3600.0
    keep_agg_1m_days: float = 14.0
    keep_agg_1h_days: float = 400.0
    scheduler_max_sleep_s: float = 30.0


T = TypeVar("T")


def _build(defaults: T, value: object, path: str) -> T:
    """``defaults`` (a dataclass instance) with the numbers of ``value`` replaced, checked key by key."""
    if not isinstance(value, Mapping):
        raise AutomationConfigError(path, "expected a table/object")
    known = {f.name for f in dataclasses.fields(defaults)}  # type: ignore[arg-type]
    unknown = sorted(set(value) - known)
    if unknown:
        raise AutomationConfigError(f"{path}.{unknown[0]}", f"unknown key; known keys: {sorted(known)}")
    changes: dict[str, object] = {}
    for name, raw in value.items():
        current = getattr(defaults, name)
        key = f"{path}.{name}"
        if dataclasses.is_dataclass(current):
            changes[name] = _build(current, raw, key)
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) or raw < 0:
            raise AutomationConfigError(key, f"expected a number >= 0, got {raw!r}")
        if isinstance(current, int) and not isinstance(raw, int):
            raise AutomationConfigError(key, f"expected a whole number, got {raw!r}")
        changes[name] = type(current)(raw)
    return dataclasses.replace(defaults, **changes)  # type: ignore[type-var]


def automation_config_from_dict(value: Mapping[str, object] | None, path: str = "automation") -> AutomationConfig:
    """Validate the ``[automation]`` table; errors name the key path (``automation.dosing.ph.max_dose_ml``)."""
    cfg = _build(AutomationConfig(), dict(value or {}), path)
    for name in ("dosing_interval_s", "aggregate_interval_s", "usage_rollup_interval_s", "retention_interval_s",
                 "scheduler_max_sleep_s", "aggregate_chunk_rows"):
        if getattr(cfg, name) <= 0:
            raise AutomationConfigError(f"{path}.{name}", "must be > 0")
    for pname in ("ph", "ec"):
        tune: Tuning = getattr(cfg.dosing, pname)
        if tune.ml_per_unit_100l <= 0 or tune.max_dose_ml < cfg.dosing.min_dose_ml:
            raise AutomationConfigError(f"{path}.dosing.{pname}",
                                        "needs ml_per_unit_100l > 0 and max_dose_ml >= min_dose_ml")
    if not 0 < cfg.dosing.gain <= 1:
        raise AutomationConfigError(f"{path}.dosing.gain", "must be in (0, 1]")
    if cfg.dosing.cooldown_s < cfg.dosing.mixing_delay_s:
        raise AutomationConfigError(f"{path}.dosing.cooldown_s", "must be >= mixing_delay_s")
    return cfg
