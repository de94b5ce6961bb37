"""NC recirculation pump control (seed 003 §12): ON by default, duty cycle by inserting OFF periods.

Inside a schedule window the period (``period_minutes``, anchored at the window's opening) starts
with its ON share (``duty_cycle * period``) followed by OFF; outside every window the pump is wanted
OFF. Whatever the schedule says, an OFF stretch never lasts longer than ``max_recirc_off_minutes``
(monotonic time, so clock jumps cannot stretch it): then the pump is forced ON for the window's ON
share or ``min_on_minutes``, whichever is longer. Any switch to ON is held for at least
``min_on_minutes`` so the relay cannot flap. Recirc disabled (or mode MANUAL) ⇒ ``LEAVE_ALONE``: the
relay is not touched and the NC pump runs in its fail-safe state.

The max-OFF limit is measured from the relay's *actual* state (``relay_on``), not from what this function
last asked for: a refused or failed switch to ON leaves the pump OFF, and the OFF clock keeps running until
the pump really runs (the safety loop enforces the same limit underneath, whoever asked for OFF).

While a water change runs (``WaterPhase.owns_recirc``) the water machine drives the pump instead;
hand back with a fresh ``RecircState()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from gateway.jsonvalue import opt_float
from gateway.water.config import RecircConfig, RecircWindow, WaterCycleConfig, WaterMode


class RecircDecision(StrEnum):
    """What to do with the recirculation relay this tick."""

    LEAVE_ALONE = "LEAVE_ALONE"
    ON = "ON"
    OFF = "OFF"


@dataclass(frozen=True)
class RecircState:
    """Last decision and its timers (monotonic seconds)."""

    on: bool | None = None  # None: we are not driving the relay
    on_since: float | None = None
    off_since: float | None = None
    hold_on_until: float | None = None
    relay_off_since: float | None = None  # when the relay was last seen going OFF (actual state)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "on": self.on,
            "on_since": self.on_since,
            "off_since": self.off_since,
            "hold_on_until": self.hold_on_until,
            "relay_off_since": self.relay_off_since,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> RecircState:
        """Inverse of ``to_dict``."""
        on = d.get("on")

        def f(key: str) -> float | None:
            return opt_float(d.get(key))

        return cls(
            on=None if on is None else bool(on),
            on_since=f("on_since"),
            off_since=f("off_since"),
            hold_on_until=f("hold_on_until"),
            relay_off_since=f("relay_off_since"),
        )


def _minute_of_day(local_now: datetime) -> float:
    return local_now.hour * 60 + local_now.minute + local_now.second / 60 + local_now.microsecond / 60e6


def active_window(rc: RecircConfig, local_now: datetime) -> RecircWindow | None:
    """The schedule window containing the local time, if any."""
    m = _minute_of_day(local_now)
    return next((w for w in rc.schedule if w.contains(m)), None)


def scheduled_on(rc: RecircConfig, local_now: datetime) -> bool:
    """What the schedule alone wants: the ON share of the period inside a window, OFF outside."""
    window = active_window(rc, local_now)
    if window is None:
        return False
    phase = window.minutes_into(_minute_of_day(local_now)) % rc.period_minutes
    return phase < window.duty_cycle * rc.period_minutes


def decide_recirc(
    cfg: WaterCycleConfig, state: RecircState, local_now: datetime, now: float, relay_on: bool | None = None
) -> tuple[RecircState, RecircDecision]:
    """One recirculation tick: ``local_now`` is aware greenhouse-local time, ``now`` monotonic seconds,
    ``relay_on`` the pump's actual state (None: unknown, then our last decision stands for it)."""
    rc = cfg.recirc
    if cfg.mode is WaterMode.MANUAL or not rc.enabled:
        return RecircState(), RecircDecision.LEAVE_ALONE
    actually_on = state.on is not False if relay_on is None else relay_on
    if actually_on:
        state = replace(state, relay_off_since=None)
    elif state.relay_off_since is None:
        state = replace(state, relay_off_since=state.off_since if state.off_since is not None else now)
    if state.hold_on_until is not None and now >= state.hold_on_until:
        state = replace(state, hold_on_until=None)
    want_on = scheduled_on(rc, local_now) or state.hold_on_until is not None
    off_for = now - state.relay_off_since if state.relay_off_since is not None else 0.0
    if not want_on and off_for >= rc.max_off_minutes * 60:
        window = active_window(rc, local_now)
        share = window.duty_cycle * rc.period_minutes if window is not None else 0.0
        state = replace(state, hold_on_until=now + max(share, rc.min_on_minutes) * 60)
        want_on = True
    if want_on:
        if state.on is not True:
            hold = max(state.hold_on_until or now, now + rc.min_on_minutes * 60)
            state = RecircState(
                on=True, on_since=now, off_since=None, hold_on_until=hold, relay_off_since=state.relay_off_since
            )
        return state, RecircDecision.ON
    if state.on is not False:
        state = RecircState(
            on=False, on_since=None, off_since=now, hold_on_until=None, relay_off_since=state.relay_off_since
        )
    return state, RecircDecision.OFF
