"""The closed command vocabulary (gateway → node and gateway relays), mirrored from ``schemas/command.json``.

Every outbound command is checked here before anything is stored or published: an unknown name, the
wrong case or params outside the command's schema raise :class:`CommandContractError` with the reason.
:func:`parse_command` also says whether the command *actuates*, i.e. could start a pump, open a doser or
energise a load; those commands must pass the safety interlock, the others (stop, OFF, calibrate) never
start anything and may always be sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from firmware_contracts.validate import MessageKind, validate

__all__ = ["CommandContractError", "CommandName", "ValidCommand", "parse_command"]


class CommandName(StrEnum):
    """The command names a node (or a gateway relay) understands."""

    RUN_PUMP = "run_pump"  # params {duration_s}: pump ON for a bounded time
    STOP_PUMP = "stop_pump"  # params {}: pump OFF
    SET_RELAY = "set_relay"  # params {state: ON|OFF}
    DOSE = "dose"  # params {ml, pump?}: a doser runs until the volume is delivered
    CALIBRATE = "calibrate"  # params {point, value?}: sensor calibration, switches nothing


class CommandContractError(ValueError):
    """The command does not match the contract; ``reason`` says why in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ValidCommand:
    """A command that matches the contract, with what it does to the actuator."""

    name: CommandName
    params: Mapping[str, object]

    @property
    def actuates(self) -> bool:
        """Could this command start something (pump/relay ON, dose)?"""
        if self.name in (CommandName.RUN_PUMP, CommandName.DOSE):
            return True
        return self.name is CommandName.SET_RELAY and self.params.get("state") == "ON"

    @property
    def pump_on(self) -> bool | None:
        """The pump state the command asks for: True (ON), False (OFF) or None (not a switching command)."""
        if self.name is CommandName.RUN_PUMP:
            return True
        if self.name is CommandName.STOP_PUMP:
            return False
        if self.name is CommandName.SET_RELAY:
            return self.params.get("state") == "ON"
        return None

    @property
    def duration_s(self) -> float | None:
        """The bounded run time of ``run_pump``, else None."""
        value = self.params.get("duration_s") if self.name is CommandName.RUN_PUMP else None
        if value is None:
            return None
        if isinstance(value, int | float):  # the schema allows only a number here
            return float(value)
        raise CommandContractError(f"duration_s must be a number, not {value!r}")


def parse_command(cmd: object, params: object) -> ValidCommand:
    """Check ``cmd`` and ``params`` against the command schema; raise CommandContractError when they do not fit."""
    payload = {"cmd": cmd, "cmd_id": "check", "params": params}
    problem = validate(MessageKind.COMMAND, payload)
    if problem is not None:
        raise CommandContractError(str(problem))
    assert isinstance(cmd, str) and isinstance(params, dict)
    return ValidCommand(CommandName(cmd), dict(params))
