"""NC/NO relay semantics (seed 003 §11), stated once; pure so settings can validate early.

- ``fail_safe_mode`` names the contact: ``NC`` is closed (pump runs) while the coil is de-energised,
  ``NO`` is open (pump stopped) while the coil is de-energised.
- ``relay_logic`` says what energising the coil does to the pump circuit: ``active_open`` opens it,
  ``active_close`` closes it. It is therefore implied by the contact: NC ⇔ active_open, NO ⇔ active_close;
  a contradictory pair is a wiring/config mistake and is rejected.
- Losing control (process dead, coils de-energised) leaves the pump in its fail-safe state:
  NC pumps run, NO pumps stop.
"""

from __future__ import annotations

from typing import Literal, cast, get_args

FailSafeMode = Literal["NC", "NO"]
RelayLogic = Literal["active_open", "active_close"]



def pump_on_for(fail_safe_mode: FailSafeMode, coil_energised: bool) -> bool:
    """THE NC/NO mapping, the only one in the code base: an NC pump runs de-energised, an NO pump energised.

    Everything else about NC/NO (the coil for a wanted pump state, the implied ``relay_logic``, the
    fail-safe state) is derived from this function.
    """
    return coil_energised != (fail_safe_mode == "NC")


def coil_energised_for(fail_safe_mode: FailSafeMode, pump_on: bool) -> bool:
    """Coil state that gives the wanted pump state (the mapping is its own inverse)."""
    return pump_on_for(fail_safe_mode, pump_on)


def relay_logic_for(fail_safe_mode: FailSafeMode) -> RelayLogic:
    """What energising the coil does to the pump circuit: NC ⇔ ``active_open``, NO ⇔ ``active_close``."""
    return "active_close" if pump_on_for(fail_safe_mode, coil_energised=True) else "active_open"


def fail_safe_pump_on(fail_safe_mode: FailSafeMode) -> bool:
    """Whether the pump runs with the coil de-energised (control lost)."""
    return pump_on_for(fail_safe_mode, coil_energised=False)


def validate_relay_logic(channel: str, fail_safe_mode: str, relay_logic: str) -> None:
    """Raise ``ValueError`` naming the channel when the mode/logic pair is unknown or contradictory."""
    if fail_safe_mode not in get_args(FailSafeMode):
        raise ValueError(f"relay channel {channel!r}: fail_safe_mode must be 'NC' or 'NO', not {fail_safe_mode!r}")
    if relay_logic not in get_args(RelayLogic):
        raise ValueError(
            f"relay channel {channel!r}: relay_logic must be 'active_open' or 'active_close', not {relay_logic!r}"
        )
    expected = relay_logic_for(cast(FailSafeMode, fail_safe_mode))
    if relay_logic != expected:
        raise ValueError(
            f"relay channel {channel!r}: fail_safe_mode {fail_safe_mode} contradicts "
            f"relay_logic {relay_logic} (an {fail_safe_mode} relay needs relay_logic = {expected!r})"
        )
