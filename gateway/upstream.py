"""Wires the ``sync`` package into the gateway: uplink, downlink and retention, with their hooks mapped
onto alerts, the registry, the water service and the command lifecycle (and so the interlocks).
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from gateway.automation.recipes import recipes_from_mapping
from gateway.commands import CommandRefused
from gateway.settings import NodeConfig, ZoneConfig
from sync.client import UpstreamClient
from sync.downlink import Downlink, DownlinkSettings
from sync.generation import SequenceGuard, SideFile, side_path
from sync.reachability import Reachability
from sync.retention import DiskLevel, Retention, RetentionSettings
from sync.uplink import Uplink, UplinkSettings

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger(__name__)


def recipes_from_upstream(recipes: list[dict[str, Any]]) -> dict[str, Any]:
    """The central recipe format (sync/openapi.yaml) → the gateway's (gateway/automation/recipes.py)."""
    out: dict[str, Any] = {}
    for recipe in recipes:
        phases: list[dict[str, Any]] = []
        start_day = 0
        for phase in recipe.get("phases", []):
            local: dict[str, Any] = {"name": phase.get("name", f"phase-{len(phases)}"), "start_day": start_day}
            targets = phase.get("targets") or {}
            for key in ("ph", "ec"):
                if key in targets:
                    local[key] = targets[key]
            if phase.get("irrigation_schedule"):
                local["irrigation"] = {"times": phase["irrigation_schedule"],
                                       "duration_s": phase.get("irrigation_duration_s", 60)}
            lights = str(phase.get("light_schedule") or "")
            if lights.count(",") == 1:
                on, off = (t.strip() for t in lights.split(","))
                local["lights"] = {"on": on, "off": off}
            phases.append(local)
            start_day += int(phase.get("duration_days") or 0)
        out[str(recipe["uid"])] = {"name": recipe.get("name", recipe["uid"]), "phases": phases}
    return out


class UpstreamSync:
    """Store-and-forward to the central system; ``status()`` feeds /api/status and /metrics."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        up = gw.settings.upstream
        self.enabled = bool(up.url)
        self.reachability = Reachability(
            unreachable_after_s=up.unreachable_alert_after_s,
            clock=gw.clock,
            on_unreachable=self._unreachable,
            on_reachable=self._reachable,
        )
        self.client = (
            UpstreamClient(up.url, up.token or "", gw.settings.gateway.id, ca_file=up.ca_file) if self.enabled else None
        )
        self.retention = Retention(
            gw.db,
            RetentionSettings(retention_days=up.retention_days, budget_bytes=up.db_budget_bytes),
            clock=gw.clock,
            on_disk_level=self._disk_level,
            on_storage_error=self._storage_error,
        )
        self._rows_sent: dict[str, int] = {}
        self.uplink: Uplink | None = None
        self.downlink: Downlink | None = None
        if self.client is not None:
            self.uplink = Uplink(
                gw.db,
                self.client,
                UplinkSettings(
                    telemetry_max_rows=up.telemetry_batch, max_bytes=up.batch_max_bytes, idle_poll_s=up.interval_s
                ),
                clock=gw.clock,
                rng=random.Random(),
                reachability=self.reachability,
                on_storage_error=self._storage_error,
                guard=SequenceGuard(gw.db, SideFile(side_path(gw.settings.db_path)), gw.db_start,
                                    on_rollback=self._rolled_back),
                on_conflict=self._conflict,
            )
            self.downlink = Downlink(
                gw.db,
                self.client,
                DownlinkSettings(config_interval_s=up.config_poll_s),
                clock=gw.clock,
                reachability=self.reachability,
                on_config=self.apply_config,
                on_config_rejected=self._config_rejected,
                submit_command=self.submit_command,
            )

    async def run(self) -> None:
        """Retention always; uplink and downlink when an upstream URL is configured."""
        import asyncio

        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.retention.run())
            if self.client is not None and self.uplink is not None and self.downlink is not None:
                async with self.client:
                    tg.create_task(self.uplink.run())
                    tg.create_task(self.downlink.run())
                    await asyncio.Event().wait()

    def status(self) -> dict[str, Any]:
        """Backlog, lag, last success and ETA per stream; downlink and retention state."""
        return {
            "enabled": self.enabled,
            "uplink": self.uplink.status() if self.uplink else None,
            "downlink": self.downlink.status() if self.downlink else None,
            "retention": self.retention.status(),
        }

    def update_metrics(self) -> None:
        """Copy per-stream backlog and lag into Prometheus gauges."""
        if self.uplink is None:
            return
        for name, st in self.uplink.status()["streams"].items():
            self.gw.metrics.sync_backlog_rows.labels(stream=name).set(st["backlog_rows"] or 0)
            self.gw.metrics.sync_lag_seconds.labels(stream=name).set(st["oldest_unsynced_age_s"] or 0)
            sent = int(st["rows_sent"] or 0)
            delta = sent - self._rows_sent.get(name, 0)
            if delta > 0:
                self.gw.metrics.sync_sent_rows.labels(stream=name).inc(delta)
            self._rows_sent[name] = sent

    # ---- hooks -------------------------------------------------------------------------------
    async def _unreachable(self, since: float) -> None:
        await self.gw.alerts.raise_alert(
            "infra_upstream_unreachable", details={"since": since, "url": self.gw.settings.upstream.url}
        )

    async def _reachable(self) -> None:
        await self.gw.alerts.resolve("infra_upstream_unreachable")

    async def _disk_level(self, level: DiskLevel, used: int, budget: int) -> None:
        if level is DiskLevel.OK:
            await self.gw.alerts.resolve("infra_disk_low")
            return
        await self.gw.alerts.raise_alert(
            "infra_disk_low", details={"level": level.value, "used_bytes": used, "budget_bytes": budget}
        )

    async def _storage_error(self, message: str) -> None:
        log.error("storage error: %s", message)
        self.retention.kick()
        try:
            await self.gw.alerts.raise_alert("infra_disk_low", details={"error": message[:300]})
        except Exception:  # the alert itself may not fit on a full disk; the log line stands
            log.exception("could not record the storage error")

    async def _rolled_back(self, report: dict[str, Any]) -> None:
        await self.gw.alerts.raise_alert("infra_db_rolled_back", details=report)

    async def _conflict(self, details: dict[str, Any]) -> None:
        await self.gw.alerts.raise_alert("infra_sync_conflict", details=details)

    async def _config_rejected(self, problems: list[str]) -> None:
        await self.gw.alerts.raise_alert("infra_config_rejected", details={"problems": problems[:20]})

    async def apply_config(self, doc: dict[str, Any]) -> None:
        """A validated config from upstream: zones, node assignments, water cycles, recipes."""
        local = {z.uid: z for z in self.gw.settings.zones}
        zones = []
        for z in doc.get("zones", []):
            base = local.get(z["uid"])
            fields: dict[str, Any] = {"uid": z["uid"], "name": z.get("name") or z["uid"]}
            if base is not None:  # hardware wiring (actuators) is local; the rest comes from upstream
                fields.update(actuators=base.actuators, tank_volume_l=base.tank_volume_l, water_cycle=base.water_cycle)
            if z.get("water_cycle"):
                fields["water_cycle"] = z["water_cycle"]
            if z.get("recipe_uid"):
                started = str(z.get("recipe_started_at") or "")[:10]  # the local start date is what counts
                fields.update(recipe=z["recipe_uid"], recipe_start=started or None)
            zones.append(ZoneConfig.model_validate(fields))
        nodes = [
            NodeConfig(
                hardware_id=n["hardware_id"], uid=n["uid"], zone=n.get("zone_uid"), node_type=n.get("node_type") or ""
            )
            for n in doc.get("nodes", [])
        ]
        await self.gw.registry.apply_config(zones, nodes)
        water = getattr(self.gw, "water", None)
        if water is not None:
            water.update_configs({z.uid: z.water_cycle for z in zones if z.water_cycle})
        try:
            self.gw.automation.apply_config(zones, recipes_from_mapping(recipes_from_upstream(doc.get("recipes", []))))
        except ValueError as exc:  # RecipeError: keep the previous recipes
            await self._config_rejected([str(exc)])
            return
        await self.gw.alerts.resolve("infra_config_rejected")
        await self.gw.alerts.record_event(None, "CONFIG_APPLIED", {"version": doc.get("version")})
        log.info("applied upstream config version %s", doc.get("version"))

    async def submit_command(self, cmd: dict[str, Any]) -> str:
        """A pending command from upstream enters the normal lifecycle (and so the interlocks)."""
        try:
            record = await self.gw.commands.submit(
                str(cmd.get("zone_uid") or ""),
                str(cmd.get("channel") or ""),
                str(cmd["cmd"]),
                cmd.get("params") or {},
                node_uid=cmd.get("node_uid"),
                source="upstream",
                cmd_id=cmd.get("cmd_id"),
            )
        except CommandRefused as exc:
            return f"refused:{exc.reason}"
        return str(record["status"])
