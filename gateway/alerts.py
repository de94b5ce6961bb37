"""Alerts (one ACTIVE per zone, code and scope; repeats bump a counter) and zone events.

Every change also lands in ``sync_outbox`` in the same transaction so it goes upstream in order.
When SQLite cannot write (disk full, I/O error), an alert is kept in memory instead: ``active()`` and
``recent()`` show it (``"stored": false``) and ``flush_unstored()`` writes it once storage is back, so an
operator sees "disk full" on /api/alerts precisely when the disk is full.
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.prometheus import Metrics
from gateway.ratelog import RateLimitedLog
from gateway.store import alerts as store
from gateway.store import events
from gateway.store.alerts import AlertJson
from gateway.store.db import Database
from gateway.store.events import EventJson

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertKind:
    """Catalogue entry: who raises it, the human text and whether it locks pumps."""

    source: str
    text: str
    severity: str = "warning"


CATALOGUE: dict[str, AlertKind] = {
    "biz_no_flow": AlertKind("biz", "No water flow detected", "critical"),
    "biz_overcurrent": AlertKind("biz", "Overcurrent on pump channel", "critical"),
    "biz_dry_run": AlertKind("biz", "Dry run protection activated", "critical"),
    "biz_pump_stuck_on": AlertKind("biz", "Pump stuck ON (relay welded or bypassed)", "critical"),
    "biz_sensor_unavailable": AlertKind("biz", "Safety sensor unavailable or stale", "warning"),
    "biz_no_circulation": AlertKind("biz", "No circulation: the NC recirculation pump is locked OFF", "critical"),
    "biz_high_ph": AlertKind("biz", "pH above target range"),
    "biz_low_ph": AlertKind("biz", "pH below target range"),
    "biz_high_ec": AlertKind("biz", "EC above target range"),
    "biz_low_ec": AlertKind("biz", "EC below target range"),
    "biz_water_change_failed": AlertKind("biz", "Water change failed, operator needed", "critical"),
    "biz_dosing_ineffective": AlertKind("biz", "Dosing does not move the reading", "warning"),
    "biz_command_failed": AlertKind("biz", "Node reported a command error", "warning"),
    "unknown_metric": AlertKind("infra", "Node sends an unknown metric", "warning"),
    "infra_mqtt_down": AlertKind("infra", "MQTT broker down", "critical"),
    "infra_mqtt_command_refused": AlertKind("infra", "An MQTT client tried to publish a command or config", "warning"),
    "infra_node_offline": AlertKind("infra", "Node offline", "warning"),
    "infra_upstream_unreachable": AlertKind("infra", "Central system unreachable", "warning"),
    "infra_disk_low": AlertKind("infra", "Database storage running low", "warning"),
    "infra_db_unreachable": AlertKind("infra", "Local database error", "critical"),
    "infra_db_corrupt": AlertKind("infra", "Local database was corrupt: moved aside, started fresh", "critical"),
    "infra_db_rolled_back": AlertKind("infra", "Local database is older than what was sent", "critical"),
    "infra_sync_conflict": AlertKind("infra", "Upstream holds other data under the same sequence", "critical"),
    "infra_config_rejected": AlertKind("infra", "Config from upstream rejected", "warning"),
    "infra_disk_full": AlertKind("infra", "Database storage full: telemetry cannot be stored", "critical"),
    "infra_node_identity_conflict": AlertKind("infra", "A node announced another node's identity", "warning"),
    "infra_hardware_fault": AlertKind("infra", "Gateway hardware fault", "critical"),
    "infra_no_external_watchdog": AlertKind("infra", "No external relay watchdog fitted (config says so)"),
    "infra_pump_unmonitored": AlertKind("infra", "Relay pump without a current monitor (no overcurrent check)"),
}


def kind_of(code: str) -> AlertKind:
    """Catalogue entry for a code (``infra_service_down_<name>`` and unknown codes get a generic one)."""
    if code in CATALOGUE:
        return CATALOGUE[code]
    if code.startswith("infra_service_down_"):
        return AlertKind("infra", f"Service down: {code.removeprefix('infra_service_down_')}", "critical")
    return AlertKind("infra" if code.startswith("infra_") else "biz", code)


AlertKey = tuple[int | None, str, str]
MAX_UNSTORED = 1000  # alerts and events kept in memory while the disk is full (oldest events dropped beyond)
Details = Mapping[str, object]


class Alerts:
    """Raise, repeat and resolve alerts; record zone events."""

    def __init__(self, db: Database, clock: Clock, metrics: Metrics) -> None:
        self._db = db
        self._clock = clock
        self._metrics = metrics
        self._unstored: dict[AlertKey, AlertJson] = {}
        self._unstored_events: list[tuple[int | None, str, Details, float]] = []
        self._memory_ids = itertools.count(-1, -1)  # in-memory alerts get negative ids
        self._ratelog = RateLimitedLog(log, 60.0, clock.monotonic)

    @property
    def unstored(self) -> int:
        """Alerts and events waiting in memory for storage to come back."""
        return len(self._unstored) + len(self._unstored_events)

    async def raise_alert(
        self,
        code: str,
        *,
        zone_id: int | None = None,
        scope: str = "",
        details: Details | None = None,
        text: str | None = None,
    ) -> tuple[int, bool]:
        """Create or bump the ACTIVE alert; returns (alert id, created). Kept in memory when SQLite cannot write."""
        self._metrics.alerts_raised.labels(code=code).inc()
        key = (zone_id, code, scope)
        if key in self._unstored:  # already waiting in memory: bump it there, the disk is (still) the problem
            return self._remember(key, details, text)
        try:
            return await self._store_alert(code, zone_id, scope, details, text, count=1, first=None)
        except sqlite3.OperationalError as exc:
            self._ratelog.warn(f"alert:{code}", "alert %s kept in memory, storage failed: %s", code, exc)
            return self._remember(key, details, text)

    def _remember(self, key: AlertKey, details: Details | None, text: str | None) -> tuple[int, bool]:
        zone_id, code, scope = key
        now = self._clock.time()
        held = self._unstored.get(key)
        if held is not None:
            held["count"] += 1
            held["last_seen_at"] = now
            held["details"] = dict(details or {})
            return held["id"], False
        if len(self._unstored) >= MAX_UNSTORED:
            return 0, False
        kind = kind_of(code)
        held = AlertJson(
            id=next(self._memory_ids), source=kind.source, code=code, type=text or kind.text,
            severity=kind.severity, zone_id=zone_id, scope=scope, details=dict(details or {}),
            status="ACTIVE", count=1, created_at=now, last_seen_at=now, resolved_at=None,
            resolved_by=None, stored=False,
        )
        self._unstored[key] = held
        log.warning("ALERT %s zone=%s scope=%s %s (not stored yet)", code, zone_id, scope, details or {})
        return held["id"], True

    async def flush_unstored(self) -> int:
        """Write the alerts and events kept in memory; returns how many were written (raises while it cannot)."""
        written = 0
        for key, held in list(self._unstored.items()):
            zone_id, code, scope = key
            await self._store_alert(code, zone_id, scope, held["details"], held["type"], count=held["count"],
                                    first=held["created_at"])
            del self._unstored[key]
            written += 1
        while self._unstored_events:
            zone_id, type_, details, at = self._unstored_events[0]
            await events.record(self._db, zone_id, type_, details, at)
            self._unstored_events.pop(0)
            written += 1
        if written:
            log.info("stored %d alert(s)/event(s) kept in memory while storage was failing", written)
        return written

    async def _store_alert(
        self, code: str, zone_id: int | None, scope: str, details: Details | None, text: str | None,
        count: int, first: float | None,
    ) -> tuple[int, bool]:
        kind = kind_of(code)
        now = self._clock.time()
        alert_id, created = await store.store_alert(
            self._db, code=code, source=kind.source, text=text or kind.text, severity=kind.severity,
            zone_id=zone_id, scope=scope, details=json.dumps(details or {}, default=str), count=count,
            first_at=first if first is not None else now, now=now,
        )
        if created:
            log.warning("ALERT %s zone=%s scope=%s %s", code, zone_id, scope, details or {})
        return alert_id, created

    async def resolve(
        self, code: str, *, zone_id: int | None = None, scope: str | None = "", by: str = "system"
    ) -> int:
        """Resolve matching ACTIVE alerts (scope None = any scope); returns how many."""
        dropped = 0
        for key in list(self._unstored):  # never stored: resolving it in memory is enough
            if key[0] == zone_id and key[1] == code and (scope is None or key[2] == scope):
                del self._unstored[key]
                dropped += 1
        try:
            resolved = await store.resolve(self._db, code, zone_id, scope, by, self._clock.time())
        except sqlite3.OperationalError as exc:
            self._ratelog.warn(f"resolve:{code}", "could not resolve %s, storage failed: %s", code, exc)
            return dropped
        if resolved:
            log.info("resolved %s zone=%s scope=%s by %s", code, zone_id, scope, by)
        return dropped + resolved

    async def active(self, zone_id: int | None = None, *, any_zone: bool = True) -> list[AlertJson]:
        """ACTIVE alerts, newest first (all zones unless ``any_zone`` is False), those kept in memory first."""
        held = {k: a for k, a in self._unstored.items() if (any_zone and zone_id is None) or k[0] == zone_id}
        try:
            stored = await store.active(self._db, zone_id, any_zone=any_zone)
        except sqlite3.OperationalError as exc:
            self._ratelog.warn("active", "could not read alerts: %s", exc)
            stored = []
        for row in stored:  # an alert stored earlier and repeated while storage fails: one entry, counts added
            repeat = held.pop((row["zone_id"], row["code"], row["scope"]), None)
            if repeat is not None:
                row["count"] += repeat["count"]
                row["last_seen_at"] = repeat["last_seen_at"]
                row["details"] = repeat["details"]
                row["stored"] = False
        memory = sorted((a.copy() for a in held.values()), key=lambda a: a["last_seen_at"], reverse=True)
        return memory + stored

    async def recent(self, limit: int = 100) -> list[AlertJson]:
        """Most recent alerts of any status (those kept in memory first)."""
        held = sorted((a.copy() for a in self._unstored.values()), key=lambda a: a["id"])[:limit]
        try:
            rows = await store.recent(self._db, limit - len(held))
        except sqlite3.OperationalError:
            rows = []
        return held + rows

    async def is_active(self, zone_id: int, code: str, scope: str) -> bool:
        """True while the stored alert (zone, code, scope) is ACTIVE."""
        return await store.is_active(self._db, zone_id, code, scope)

    async def record_event(self, zone_id: int | None, type_: str, details: Details | None = None) -> int:
        """Append a zone event (and its outbox row); kept in memory (id 0) while SQLite cannot write."""
        now = self._clock.time()
        if self._unstored_events:  # keep the order: older events are still waiting
            self._hold_event(zone_id, type_, details or {}, now)
            return 0
        try:
            return await events.record(self._db, zone_id, type_, details or {}, now)
        except sqlite3.OperationalError as exc:
            self._ratelog.warn(f"event:{type_}", "event %s kept in memory, storage failed: %s", type_, exc)
            self._hold_event(zone_id, type_, details or {}, now)
            return 0

    def _hold_event(self, zone_id: int | None, type_: str, details: Details, at: float) -> None:
        if len(self._unstored_events) >= MAX_UNSTORED:
            self._unstored_events.pop(0)
        self._unstored_events.append((zone_id, type_, details, at))

    async def events(self, zone_id: int | None = None, limit: int = 100) -> list[EventJson]:
        """Recent zone events, newest first."""
        return await events.recent(self._db, zone_id, limit)
