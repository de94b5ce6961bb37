"""The start interlock ``can_run_pump`` (SPEC §6, seed 003 §16.1): every pump start asks it first.

Checks, in order; the first refusal wins and its reason goes to logs and the API:

1. ``locked:<code>``   this physical pump is locked (overcurrent, no flow, stuck on) until an operator resets it;
   NC pumps: ``alert:<code>`` also when a critical alert names this same pump; nothing else refuses them
   (see below);
2. ``watchdog_tripped`` the relay watchdog has released every coil: no start until the loop is healthy again;
3. ``alert:<code>``    a critical safety alert is ACTIVE for the zone (``CRITICAL_ALERT_CODES``);
4. ``level_unavailable`` the channel needs a level reading and the latest one is missing or stale;
5. ``dry_run``         the fresh level is below the channel's minimum (also raises ``biz_dry_run``);
6. ``too_many_failures`` ``recent_failures >= max_failures`` within the caller's window;
7. ``sensor_unavailable:<sensor>`` a NO pump would run with a blind protection (``rules.blind_sensors``).

Otherwise ``allowed`` with reason ``ok``.

An NC pump's "ON" is its de-energised, fail-safe state (seed 003 §11–12): returning it there is never refused
by anything that is not about that pump itself — not a missing or stale level, not another pump's alert, not
the failure counter of the zone, not a tripped watchdog (which has already released the coil). Only a lock or
an active critical alert on that same pump keeps it OFF (and then the zone has no circulation: the caller
raises ``biz_no_circulation``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.safety.rules import (
    BIZ_DRY_RUN,
    BIZ_NO_FLOW,
    BIZ_OVERCURRENT,
    BIZ_PUMP_STUCK_ON,
    FailSafe,
    RaiseAlert,
    Sensor,
    Severity,
    fresh,
)

CRITICAL_ALERT_CODES: frozenset[str] = frozenset({BIZ_OVERCURRENT, BIZ_NO_FLOW, BIZ_DRY_RUN, BIZ_PUMP_STUCK_ON})


@dataclass(frozen=True)
class InterlockSnapshot:
    """Everything ``can_run_pump`` needs about one zone and channel, gathered by the caller."""

    channel: str
    active_alert_codes: frozenset[str] = frozenset()
    locked_code: str | None = None
    water_level: float | None = None
    level_age_s: float | None = None
    stale_after_s: float = 30.0
    min_water_level: float | None = None  # None: this channel has no dry-run limit (e.g. fill)
    requires_level: bool = True
    recent_failures: int = 0
    max_failures: int = 3
    unavailable_sensors: tuple[Sensor, ...] = ()
    fail_safe: FailSafe = FailSafe.NO
    own_alert_codes: frozenset[str] = frozenset()  # active alerts scoped to this very pump
    watchdog_tripped: bool = False


@dataclass(frozen=True)
class InterlockDecision:
    """Whether the pump may start, why (log/API string) and an alert to raise, if any."""

    allowed: bool
    reason: str
    raise_alert: RaiseAlert | None = None


def can_run_pump(snapshot: InterlockSnapshot) -> InterlockDecision:
    """Decide whether the channel may start now."""
    s = snapshot
    if s.locked_code is not None:
        return InterlockDecision(False, f"locked:{s.locked_code}")
    if s.fail_safe is FailSafe.NC:
        own = sorted(s.own_alert_codes & CRITICAL_ALERT_CODES)
        if own:
            return InterlockDecision(False, f"alert:{own[0]}")
        return InterlockDecision(True, "ok")
    if s.watchdog_tripped:
        return InterlockDecision(False, "watchdog_tripped")
    critical = sorted(s.active_alert_codes & CRITICAL_ALERT_CODES)
    if critical:
        return InterlockDecision(False, f"alert:{critical[0]}")
    level = fresh(s.water_level, s.level_age_s, s.stale_after_s)
    if level is None and s.requires_level:
        return InterlockDecision(False, "level_unavailable")
    if level is not None and s.min_water_level is not None and level < s.min_water_level:
        alert = RaiseAlert(
            BIZ_DRY_RUN,
            Severity.CRITICAL,
            {"channel": s.channel, "water_level": level, "min_level": s.min_water_level},
            scope=s.channel,
        )
        return InterlockDecision(False, "dry_run", alert)
    if s.recent_failures >= s.max_failures:
        return InterlockDecision(False, "too_many_failures")
    if s.unavailable_sensors:
        return InterlockDecision(False, f"sensor_unavailable:{s.unavailable_sensors[0]}")
    return InterlockDecision(True, "ok")
