"""Wires the ``sync`` package into the gateway: uplink, downlink and retention, their hooks mapped onto alerts.

What a downloaded config or command does locally is decided elsewhere (``config_merge``, ``downlink_commands``):
this module receives those as callables.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.alerts import Alerts
from gateway.clock import Clock
from gateway.prometheus import Metrics
from gateway.settings import UpstreamSection
from gateway.store.db import Database
from sync.client import UpstreamClient
from sync.downlink import Downlink, DownlinkSettings
from sync.generation import SequenceGuard, SideFile, StartMarks, side_path
from sync.reachability import Reachability
from sync.retention import DiskLevel, Retention, RetentionSettings
from sync.uplink import Uplink, UplinkSettings

log = logging.getLogger(__name__)

ApplyConfig = Callable[[Mapping[str, object]], Awaitable[None]]
RejectConfig = Callable[[list[str]], Awaitable[None]]
SubmitCommand = Callable[[Mapping[str, object]], Awaitable[str]]


class UpstreamSync:
    """Store-and-forward to the central system; ``status()`` feeds /api/status and /metrics."""

    def __init__(
        self,
        up: UpstreamSection,
        gateway_id: str,
        db_path: Path,
        db: Database,
        db_start: StartMarks,
        clock: Clock,
        alerts: Alerts,
        metrics: Metrics,
        *,
        apply_config: ApplyConfig,
        reject_config: RejectConfig,
        submit_command: SubmitCommand,
    ) -> None:
        self._alerts = alerts
        self._metrics = metrics
        self._url = up.url
        self.enabled = bool(up.url)
        self.reachability = Reachability(
            unreachable_after_s=up.unreachable_alert_after_s,
            clock=clock,
            on_unreachable=self._unreachable,
            on_reachable=self._reachable,
        )
        self.client = UpstreamClient(up.url, up.token or "", gateway_id, ca_file=up.ca_file) if self.enabled else None
        self.retention = Retention(
            db,
            RetentionSettings(retention_days=up.retention_days, budget_bytes=up.db_budget_bytes),
            clock=clock,
            on_disk_level=self._disk_level,
            on_storage_error=self._storage_error,
        )
        self._rows_sent: dict[str, int] = {}
        self.uplink: Uplink | None = None
        self.downlink: Downlink | None = None
        if self.client is not None:
            self.uplink = Uplink(
                db,
                self.client,
                UplinkSettings(
                    telemetry_max_rows=up.telemetry_batch, max_bytes=up.batch_max_bytes, idle_poll_s=up.interval_s
                ),
                clock=clock,
                rng=random.Random(),
                reachability=self.reachability,
                on_storage_error=self._storage_error,
                guard=SequenceGuard(db, SideFile(side_path(db_path)), db_start, on_rollback=self._rolled_back),
                on_conflict=self._conflict,
            )
            self.downlink = Downlink(
                db,
                self.client,
                DownlinkSettings(config_interval_s=up.config_poll_s),
                clock=clock,
                reachability=self.reachability,
                on_config=apply_config,
                on_config_rejected=reject_config,
                submit_command=submit_command,
            )

    async def run(self) -> None:
        """Retention always; uplink and downlink when an upstream URL is configured."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.retention.run())
            if self.client is not None and self.uplink is not None and self.downlink is not None:
                async with self.client:
                    tg.create_task(self.uplink.run())
                    tg.create_task(self.downlink.run())
                    await asyncio.Event().wait()

    def status(self) -> dict[str, Any]:  # sync's status documents are untyped JSON
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
            self._metrics.sync_backlog_rows.labels(stream=name).set(st["backlog_rows"] or 0)
            self._metrics.sync_lag_seconds.labels(stream=name).set(st["oldest_unsynced_age_s"] or 0)
            sent = int(st["rows_sent"] or 0)
            delta = sent - self._rows_sent.get(name, 0)
            if delta > 0:
                self._metrics.sync_sent_rows.labels(stream=name).inc(delta)
            self._rows_sent[name] = sent

    # ---- hooks -------------------------------------------------------------------------------
    async def _unreachable(self, since: float) -> None:
        await self._alerts.raise_alert("infra_upstream_unreachable", details={"since": since, "url": self._url})

    async def _reachable(self) -> None:
        await self._alerts.resolve("infra_upstream_unreachable")

    async def _disk_level(self, level: DiskLevel, used: int, budget: int) -> None:
        if level is DiskLevel.OK:
            await self._alerts.resolve("infra_disk_low")
            return
        await self._alerts.raise_alert(
            "infra_disk_low", details={"level": level.value, "used_bytes": used, "budget_bytes": budget}
        )

    async def _storage_error(self, message: str) -> None:
        log.error("storage error: %s", message)
        self.retention.kick()
        try:
            await self._alerts.raise_alert("infra_disk_low", details={"error": message[:300]})
        except Exception:  # the alert itself may not fit on a full disk; the log line stands
            log.exception("could not record the storage error")

    async def _rolled_back(self, report: Mapping[str, object]) -> None:
        await self._alerts.raise_alert("infra_db_rolled_back", details=dict(report))

    async def _conflict(self, details: Mapping[str, object]) -> None:
        await self._alerts.raise_alert("infra_sync_conflict", details=dict(details))
