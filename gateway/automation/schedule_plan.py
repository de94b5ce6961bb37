"""Time-of-day schedule planning: apscheduler triggers, missed runs and the misfire policy. Pure.

``LocalTimesTrigger`` is an apscheduler 3 trigger that fires once per (local date, time of day), the
times coming from a function of the date (so they follow the recipe phase of that day). DST:
apscheduler's own ``CronTrigger`` fires a 02:30 job twice on the fall-back night (it yields both
02:30+02:00 and 02:30+01:00); here each local date yields each time exactly once. An ambiguous time
(fall back) runs at its first occurrence; a time that does not exist (spring forward) runs shifted
by the gap (02:30 → 03:30 CEST), so nothing is skipped.

``due_fire_times`` lists the fire times in ``(last_run, now]`` with the trigger's
``get_next_fire_time(prev, now)``, like apscheduler's scheduler does; ``plan_runs`` applies the
misfire policy to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Protocol

from apscheduler.triggers.base import BaseTrigger

_ONE_US = timedelta(microseconds=1)
_SEARCH_DAYS = 400  # a trigger with no times for this long has no next fire time


class Trigger(Protocol):
    """What the planner needs from an apscheduler trigger."""

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        """Next fire time after ``previous_fire_time`` (or at/after ``now`` when None)."""
        ...


def local_instant(d: date, t: time, tz: tzinfo) -> datetime:
    """The instant of wall time ``t`` on ``d``: the first one when ambiguous, shifted by the gap when absent."""
    aware = datetime.combine(d, t).replace(tzinfo=tz, fold=0)
    # Round-tripping through UTC normalises a non-existent wall time to the real instant after the gap.
    return aware.astimezone(UTC).astimezone(tz)


class LocalTimesTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires at the local times ``times_for(date)`` of each date in ``tz``; DST-safe (see module docstring)."""

    def __init__(self, tz: tzinfo, times_for: Callable[[date], Sequence[time]]) -> None:
        self.timezone = tz
        self._times_for = times_for

    def occurrences(self, d: date) -> list[tuple[datetime, time]]:
        """(instant, wall time) of each time on local date ``d``, in time order, one per distinct instant."""
        seen: dict[datetime, time] = {}
        for t in sorted(set(self._times_for(d))):
            seen.setdefault(local_instant(d, t, self.timezone), t)
        return sorted(seen.items())

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        """The first occurrence after ``previous_fire_time``, or at/after ``now`` when there is none yet."""
        after = previous_fire_time if previous_fire_time is not None else now - _ONE_US
        day = after.astimezone(self.timezone).date() - timedelta(days=1)
        for i in range(_SEARCH_DAYS):
            for instant, _ in self.occurrences(day + timedelta(days=i)):
                if instant > after:
                    return instant
        return None

    def wall_time_of(self, instant: datetime) -> tuple[date, time] | None:
        """The (local date, scheduled wall time) that produced ``instant``, or None."""
        local = instant.astimezone(self.timezone).date()
        for d in (local, local - timedelta(days=1)):
            for inst, t in self.occurrences(d):
                if inst == instant:
                    return d, t
        return None

    def __str__(self) -> str:
        return f"local_times[{self.timezone}]"


def due_fire_times(trigger: Trigger, last_run: datetime, now: datetime, limit: int = 10_000) -> list[datetime]:
    """Fire times in ``(last_run, now]``, oldest first (at most ``limit``, the newest kept)."""
    out: list[datetime] = []
    t = trigger.get_next_fire_time(last_run, now)
    while t is not None and t <= now:
        if t > last_run:
            out.append(t)
            if len(out) > limit:
                del out[0]
        t = trigger.get_next_fire_time(t, now)
    return out


class Misfire(StrEnum):
    """What to do with fire times that passed while the gateway was down (or busy)."""

    STATE = "state"  # state-based (lights): at start and on each fire, apply what should be true now
    GRACE = "grace"  # irrigation: the newest run within the grace time runs once, older ones are skipped
    COALESCE = "coalesce"  # run once for however many were missed


@dataclass(frozen=True)
class Plan:
    """The misfire decision for one job."""

    run: datetime | None  # the scheduled fire time to execute now, if any
    skipped: tuple[datetime, ...] = ()  # missed beyond the grace time: recorded, not run
    coalesced: int = 0  # extra missed fire times folded into ``run``


def plan_runs(policy: Misfire, due: Sequence[datetime], now: datetime, grace_s: float) -> Plan:
    """Apply the misfire policy to the fire times ``due`` (oldest first)."""
    if not due:
        return Plan(None)
    if policy is Misfire.GRACE:
        within = [t for t in due if (now - t).total_seconds() <= grace_s]
        skipped = tuple(t for t in due if (now - t).total_seconds() > grace_s)
        return Plan(within[-1] if within else None, skipped, max(0, len(within) - 1))
    return Plan(due[-1], (), len(due) - 1)
