"""Closing the loop on the simulated greenhouse: dose commands act on a ``TankSim``.

The demo hooks ``SimDoser.on_command`` as the ``on_command`` of a simulated dosing node; tests use
``TankPublish`` as CommandService's publish function so every published ``dose`` lands in the tank.
"""

from __future__ import annotations

import json
import math
from typing import Any

from gateway.sim.tank import TankSim

# The tank model knows one nutrient; the A and B concentrates each carry half of it.
SIM_REAGENT = {"ph_down": "ph_down", "ph_up": "ph_up", "nutrient_a": "nutrient", "nutrient_b": "nutrient"}


class SimDoser:
    """Applies ``dose`` commands (``{"ml": x, "reagent": r}``) to a tank and records them."""

    def __init__(self, tank: TankSim) -> None:
        self.tank = tank
        self.doses: list[tuple[str, float]] = []

    def apply(self, cmd: str, params: dict[str, Any]) -> dict[str, Any]:
        """Execute one command; returns the command_response fields (status, error_code)."""
        if cmd != "dose":
            return {"status": "DONE"}
        reagent, ml = params.get("reagent"), params.get("ml")
        if reagent not in SIM_REAGENT or not isinstance(ml, int | float) or not math.isfinite(ml) or ml < 0:
            return {"status": "ERROR", "error_code": "bad_params", "details": {"params": params}}
        # A zero-length step adds the dose to the tank's mixing lag without moving time.
        self.tank.step(0.0, {}, {SIM_REAGENT[str(reagent)]: float(ml)})
        self.doses.append((str(reagent), float(ml)))
        return {"status": "DONE"}

    async def on_command(self, channel: str, cmd: dict[str, Any]) -> dict[str, Any]:
        """The ``CommandFn`` of a simulated node (``gateway.sim.nodes``)."""
        return self.apply(str(cmd.get("cmd", "")), dict(cmd.get("params") or {}))


class TankPublish:
    """A publish function for CommandService that delivers command payloads to a ``SimDoser``."""

    def __init__(self, doser: SimDoser) -> None:
        self.doser = doser
        self.published: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Record the message; apply it when it is a command."""
        body = json.loads(payload)
        self.published.append((topic, body))
        if topic.endswith("/command"):
            self.doser.apply(str(body.get("cmd", "")), dict(body.get("params") or {}))
