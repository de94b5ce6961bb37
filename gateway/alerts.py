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
from dataclasses import dataclass
from typing import Any

import aiosqlite

from gateway.clock import Clock
from gateway.metrics import Metrics
from gateway.ratelog import RateLimitedLog
from gateway.store.db import Database

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


def alert_row(row: aiosqlite.Row) -> dict[str, Any]:
    """JSON-ready alert."""
    out = dict(row)
    out["details"] = json.loads(out["details"])
    return out


AlertKey = tuple[int | None, str, str]
MAX_UNSTORED = 1000  # alerts and events kept in memory while the disk is full (oldest events dropped beyond)


class Alerts:
    """Raise, repeat and resolve alerts; record zone events."""

    def __init__(self, db: Database, clock: Clock, metrics: Metrics) -> None:
        self._db = db
        self._clock = clock
        self._metrics = metrics
        self._unstored: dict[AlertKey, dict[str, Any]] = {}
        self._unstored_events: list[tuple[int | None, str, dict[str, Any], float]] = []
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
        details: dict[str, Any] | None = None,
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

    def _remember(self, key: AlertKey, details: dict[str, Any] | None, text: str | None) -> tuple[int, bool]:
        zone_id, code, scope = key
        now = self._clock.time()
        held = self._unstored.get(key)
        if held is not None:
            held.update(count=held["count"] + 1, last_seen_at=now, details=details or {})
            return int(held["id"]), False
        if len(self._unstored) >= MAX_UNSTORED:
            return 0, False
        kind = kind_of(code)
        held = {
            "id": next(self._memory_ids), "source": kind.source, "code": code, "type": text or kind.text,
            "severity": kind.severity, "zone_id": zone_id, "scope": scope, "details": details or {},
            "status": "ACTIVE", "count": 1, "created_at": now, "last_seen_at": now, "resolved_at": None,
            "resolved_by": None, "stored": False,
        }
        self._unstored[key] = held
        log.warning("ALERT %s zone=%s scope=%s %s (not stored yet)", code, zone_id, scope, details or {})
        return int(held["id"]), True

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
            await self._store_event(zone_id, type_, details, at)
            self._unstored_events.pop(0)
            written += 1
        if written:
            log.info("stored %d alert(s)/event(s) kept in memory while storage was failing", written)
        return written

    async def _store_alert(
        self, code: str, zone_id: int | None, scope: str, details: dict[str, Any] | None, text: str | None,
        count: int, first: float | None,
    ) -> tuple[int, bool]:
        kind = kind_of(code)
        now = self._clock.time()
        body = json.dumps(details or {}, default=str)
        async with self._db.transaction() as conn:
            async with conn.execute(
                "SELECT id FROM alerts WHERE status='ACTIVE'"
                " AND IFNULL(zone_id,-1)=IFNULL(?,-1) AND code=? AND scope=?",
                (zone_id, code, scope),
            ) as cur:
                existing = await cur.fetchone()
            if existing is not None:
                await conn.execute(
                    "UPDATE alerts SET count=count+?, last_seen_at=?, details=? WHERE id=?",
                    (count, now, body, existing[0]),
                )
                return int(existing[0]), False
            cur2 = await conn.execute(
                "INSERT INTO alerts(source, code, type, severity, zone_id, scope, details, status, count,"
                " created_at, last_seen_at) VALUES (?,?,?,?,?,?,?,'ACTIVE',?,?,?)",
                (kind.source, code, text or kind.text, kind.severity, zone_id, scope, body, count,
                 first if first is not None else now, now),
            )
            alert_id = int(cur2.lastrowid or 0)
            await self._outbox_alert(conn, alert_id)
        log.warning("ALERT %s zone=%s scope=%s %s", code, zone_id, scope, details or {})
        return alert_id, True

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
            return dropped + await self._resolve_stored(code, zone_id, scope, by)
        except sqlite3.OperationalError as exc:
            self._ratelog.warn(f"resolve:{code}", "could not resolve %s, storage failed: %s", code, exc)
            return dropped

    async def _resolve_stored(self, code: str, zone_id: int | None, scope: str | None, by: str) -> int:
        now = self._clock.time()
        sql = "SELECT id FROM alerts WHERE status='ACTIVE' AND IFNULL(zone_id,-1)=IFNULL(?,-1) AND code=?"
        params: list[Any] = [zone_id, code]
        if scope is not None:
            sql += " AND scope=?"
            params.append(scope)
        async with self._db.transaction() as conn:
            async with conn.execute(sql, params) as cur:
                ids = [int(r[0]) for r in await cur.fetchall()]
            for alert_id in ids:
                await conn.execute(
                    "UPDATE alerts SET status='RESOLVED', resolved_at=?, resolved_by=? WHERE id=?", (now, by, alert_id)
                )
                await self._outbox_alert(conn, alert_id)
        if ids:
            log.info("resolved %s zone=%s scope=%s by %s", code, zone_id, scope, by)
        return len(ids)

    async def active(self, zone_id: int | None = None, *, any_zone: bool = True) -> list[dict[str, Any]]:
        """ACTIVE alerts, newest first (all zones unless ``any_zone`` is False), those kept in memory first."""
        held = {k: a for k, a in self._unstored.items() if (any_zone and zone_id is None) or k[0] == zone_id}
        try:
            stored = await self._active_stored(zone_id, any_zone)
        except sqlite3.OperationalError as exc:
            self._ratelog.warn("active", "could not read alerts: %s", exc)
            stored = []
        for row in stored:  # an alert stored earlier and repeated while storage fails: one entry, counts added
            repeat = held.pop((row["zone_id"], row["code"], row["scope"]), None)
            if repeat is not None:
                row.update(count=row["count"] + repeat["count"], last_seen_at=repeat["last_seen_at"],
                           details=repeat["details"], stored=False)
        memory = sorted((dict(a) for a in held.values()), key=lambda a: a["last_seen_at"], reverse=True)
        return memory + stored

    async def _active_stored(self, zone_id: int | None, any_zone: bool) -> list[dict[str, Any]]:
        if any_zone and zone_id is None:
            rows = await self._db.fetchall("SELECT * FROM alerts WHERE status='ACTIVE' ORDER BY last_seen_at DESC")
        else:
            rows = await self._db.fetchall(
                "SELECT * FROM alerts WHERE status='ACTIVE' AND IFNULL(zone_id,-1)=IFNULL(?,-1)"
                " ORDER BY last_seen_at DESC",
                (zone_id,),
            )
        return [alert_row(r) for r in rows]

    async def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """Most recent alerts of any status (those kept in memory first)."""
        held = sorted((dict(a) for a in self._unstored.values()), key=lambda a: a["id"])[:limit]
        try:
            rows = await self._db.fetchall("SELECT * FROM alerts ORDER BY id DESC LIMIT ?", (limit - len(held),))
        except sqlite3.OperationalError:
            rows = []
        return held + [alert_row(r) for r in rows]

    async def record_event(self, zone_id: int | None, type_: str, details: dict[str, Any] | None = None) -> int:
        """Append a zone event (and its outbox row); kept in memory (id 0) while SQLite cannot write."""
        now = self._clock.time()
        if self._unstored_events:  # keep the order: older events are still waiting
            self._hold_event(zone_id, type_, details or {}, now)
            return 0
        try:
            return await self._store_event(zone_id, type_, details or {}, now)
        except sqlite3.OperationalError as exc:
            self._ratelog.warn(f"event:{type_}", "event %s kept in memory, storage failed: %s", type_, exc)
            self._hold_event(zone_id, type_, details or {}, now)
            return 0

    def _hold_event(self, zone_id: int | None, type_: str, details: dict[str, Any], at: float) -> None:
        if len(self._unstored_events) >= MAX_UNSTORED:
            self._unstored_events.pop(0)
        self._unstored_events.append((zone_id, type_, details, at))

    async def _store_event(self, zone_id: int | None, type_: str, details: dict[str, Any], now: float) -> int:
        body = json.dumps(details or {}, default=str)
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO zone_events(zone_id, type, details, created_at) VALUES (?,?,?,?)",
                (zone_id, type_, body, now),
            )
            event_id = int(cur.lastrowid or 0)
            zone_uid = await _zone_uid(conn, zone_id)
            await conn.execute(
                "INSERT INTO sync_outbox(stream, body, created_at) VALUES ('zone_events', ?, ?)",
                (
                    json.dumps(
                        {
                            "event_id": event_id,
                            "zone_uid": zone_uid,
                            "type": type_,
                            "details": details or {},
                            "created_at": now,
                        },
                        default=str,
                    ),
                    now,
                ),
            )
        return event_id

    async def events(self, zone_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Recent zone events, newest first."""
        if zone_id is None:
            rows = await self._db.fetchall("SELECT * FROM zone_events ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = await self._db.fetchall(
                "SELECT * FROM zone_events WHERE zone_id=? ORDER BY id DESC LIMIT ?", (zone_id, limit)
            )
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]

    async def _outbox_alert(self, conn: aiosqlite.Connection, alert_id: int) -> None:
        async with conn.execute("SELECT * FROM alerts WHERE id=?", (alert_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return
        body = alert_row(row)
        body["zone_uid"] = await _zone_uid(conn, row["zone_id"])
        await conn.execute(
            "INSERT INTO sync_outbox(stream, body, created_at) VALUES ('alerts', ?, ?)",
            (json.dumps(body, default=str), self._clock.time()),
        )


async def _zone_uid(conn: aiosqlite.Connection, zone_id: int | None) -> str | None:
    if zone_id is None:
        return None
    async with conn.execute("SELECT uid FROM zones WHERE id=?", (zone_id,)) as cur:
        row = await cur.fetchone()
    return str(row[0]) if row else None
