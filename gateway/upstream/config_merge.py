"""An upstream config merged with the local wiring, then applied to the registry, water cycle and automation.

Hardware wiring (a zone's actuators, tank volume, local water cycle) stays local; identity, assignments, water
cycles and recipes come from upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from gateway.alerts import Alerts
from gateway.automation.recipes import Recipe, recipes_from_mapping
from gateway.registry import Registry
from gateway.settings import NodeConfig, ZoneConfig
from gateway.upstream.config_doc import UpstreamConfig, UpstreamNode, UpstreamZone, as_config
from gateway.upstream.recipes_translate import recipes_from_upstream
from gateway.water.service import WaterService

log = logging.getLogger(__name__)


class RecipePlanner(Protocol):
    """The automation service as the config applier sees it."""

    def apply_config(self, zones: Sequence[ZoneConfig], recipes: Mapping[str, Recipe]) -> None:
        """Adopt zones and recipes; raises ValueError (RecipeError) and keeps the old ones when invalid."""
        ...


def merge_zones(zones: Sequence[UpstreamZone], local: Sequence[ZoneConfig]) -> list[ZoneConfig]:
    """Upstream zones with the local hardware wiring of the zones this gateway already knows."""
    by_uid = {z.uid: z for z in local}
    out = []
    for z in zones:
        uid = z["uid"]
        base = by_uid.get(uid)
        fields: dict[str, object] = {"uid": uid, "name": z.get("name") or uid}
        if base is not None:  # hardware wiring (actuators) is local; the rest comes from upstream
            fields.update(actuators=base.actuators, tank_volume_l=base.tank_volume_l, water_cycle=base.water_cycle)
        water_cycle = z.get("water_cycle")
        if water_cycle:
            fields["water_cycle"] = water_cycle
        recipe = z.get("recipe_uid")
        if recipe:
            started = str(z.get("recipe_started_at") or "")[:10]  # the local start date is what counts
            fields.update(recipe=recipe, recipe_start=started or None)
        out.append(ZoneConfig.model_validate(fields))
    return out


def nodes_of(nodes: Sequence[UpstreamNode]) -> list[NodeConfig]:
    """Node assignments from upstream."""
    return [
        NodeConfig(
            hardware_id=n["hardware_id"], uid=n["uid"], zone=n.get("zone_uid"), node_type=n.get("node_type") or ""
        )
        for n in nodes
    ]


class ConfigApplier:
    """Applies a validated upstream config; a recipe it cannot use is rejected (alert) and the old ones stay."""

    def __init__(self, local_zones: Sequence[ZoneConfig], registry: Registry, water: WaterService,
                 automation: RecipePlanner, alerts: Alerts) -> None:
        self._local = tuple(local_zones)
        self._registry = registry
        self._water = water
        self._automation = automation
        self._alerts = alerts

    async def apply(self, raw: Mapping[str, object]) -> None:
        """A validated config from upstream: zones, node assignments, water cycles, recipes."""
        doc: UpstreamConfig = as_config(raw)
        zones = merge_zones(doc.get("zones", []), self._local)
        await self._registry.apply_config(zones, nodes_of(doc.get("nodes", [])))
        self._water.update_configs({z.uid: z.water_cycle for z in zones if z.water_cycle})
        try:
            recipes = recipes_from_mapping(recipes_from_upstream(doc.get("recipes", [])))
            self._automation.apply_config(zones, recipes)
        except ValueError as exc:  # RecipeError: keep the previous recipes
            await self.rejected([str(exc)])
            return
        await self._alerts.resolve("infra_config_rejected")
        await self._alerts.record_event(None, "CONFIG_APPLIED", {"version": doc.get("version")})
        log.info("applied upstream config version %s", doc.get("version"))

    async def rejected(self, problems: list[str]) -> None:
        """Upstream sent a config the gateway cannot use: the operator should know why."""
        await self._alerts.raise_alert("infra_config_rejected", details={"problems": problems[:20]})
