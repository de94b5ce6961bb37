"""What automation knows about each zone: its recipe assignment, actuators and tank, from Settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.automation.recipes import Assignment, Recipe, assignment_for
from gateway.settings import ActuatorRef, ZoneConfig
from gateway.store import nodes
from gateway.store.db import Database


class ZoneState(Protocol):
    """The safety/water layer as automation sees it (implemented by the lead's water/safety service)."""

    def circulating(self, zone_id: int) -> bool:
        """Recirc pump ON and the water cycle in NORMAL_RECIRC."""
        ...

    def locked(self, zone_id: int) -> bool:
        """Any active safety lock on the zone."""
        ...


@dataclass(frozen=True)
class ZonePlan:
    """One zone for automation."""

    uid: str
    assignment: Assignment | None
    actuators: Mapping[str, ActuatorRef] = field(default_factory=dict)
    tank_volume_l: float = 200.0


def zone_plans(zones: Sequence[ZoneConfig], recipes: Mapping[str, Recipe]) -> list[ZonePlan]:
    """Each zone's assignment of the parsed recipes; raises RecipeError naming the key path."""
    parsed = recipes
    return [
        ZonePlan(z.uid, assignment_for(z.recipe, z.recipe_start, parsed, f"zones.{i}"), dict(z.actuators),
                 z.tank_volume_l)
        for i, z in enumerate(zones)
    ]


class ZoneIds:
    """Zone uid → database id, looked up once (zones are created by the registry at start)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[str, int] = {}

    async def get(self, uid: str) -> int | None:
        """The zone's id, or None when the registry has not created it."""
        if uid not in self._cache:
            zone_id = await nodes.zone_id(self._db, uid)
            if zone_id is None:
                return None
            self._cache[uid] = zone_id
        return self._cache[uid]
