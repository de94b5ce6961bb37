"""What the pages and the JSON API show, assembled from the gateway's live state and SQLite.

Every function returns JSON-ready dicts: the API serves them as they are, the templates render them.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gateway.safety.interlock import CRITICAL_ALERT_CODES
from gateway.store import commands as commands_store
from gateway.store import events as events_store
from gateway.store import nodes as nodes_store
from gateway.store import samples as samples_store
from gateway.store.alerts import AlertJson
from gateway.store.commands import CommandJson
from gateway.store.events import EventJson
from gateway.telemetry_metrics import CANONICAL_METRICS, Metric
from gateway.water.cycle import CHANGE_PHASES
from gateway.web.events_text import event_sentence
from gateway.web.plan_view import reading_state, targets_now, zone_plan
from gateway.web.series import LABELS, UNITS

if TYPE_CHECKING:
    from gateway.web.context import WebServices

METRIC_ORDER = {m: i for i, m in enumerate(Metric)}
WATER_HISTORY_TYPES = (
    "WATER_CHANGE_STARTED",
    "WATER_CHANGE_COMPLETED",
    "WATER_CHANGE_FAILED",
    "WATER_CHANGE_ABORTED",
    "WATER_CHANGE_ACKNOWLEDGED",
)


async def overview(g: WebServices) -> dict[str, Any]:
    """Everything on the overview page."""
    now = g.clock.time()
    active = await alerts_with_zone(g, await g.alerts.active())
    return {
        "now": now,
        "gateway": await gateway_view(g),
        "zones": await zone_summaries(g, now, active),
        "alerts": {"active": active},
        "sync": sync_view(g),
    }


async def gateway_view(g: WebServices) -> dict[str, Any]:
    """Identity, uptime, storage, broker clients and node counts."""
    disk = await asyncio.to_thread(shutil.disk_usage, g.settings.gateway.data_dir)
    nodes = g.registry.nodes()
    clients = g.broker.clients()
    return {
        "id": g.settings.gateway.id,
        "greenhouse_uid": g.settings.gateway.greenhouse_uid,
        "mode": g.settings.gateway.mode.value,
        "timezone": g.settings.gateway.timezone,
        "uptime_s": round(g.uptime_s(), 1),
        "disk": {
            "total_bytes": disk.total,
            "used_bytes": disk.used,
            "free_bytes": disk.free,
            "used_pct": round(100.0 * disk.used / disk.total, 1) if disk.total else None,
        },
        "db_size_bytes": await g.db.size_bytes(),
        "broker": {"port": g.broker.port, "client_count": len(clients), "clients": clients},
        "nodes": {"total": len(nodes), "online": sum(1 for n in nodes if n.online)},
        "safety": _safety_loop(g),
    }


async def zone_summaries(
    g: WebServices, now: float, active: list[dict[str, Any]], only: str | None = None
) -> list[dict[str, Any]]:
    """Each zone with its water state, pumps, latest readings (with age) and alert counts."""
    zones = await nodes_store.zones(g.db)
    readings = await _readings_by_zone(g, now)
    snapshot = _safety_zones(g)
    water_states = _water_states(g)
    out = []
    for z in zones:
        uid = z.uid
        if only is not None and uid != only:
            continue
        zone_alerts = [a for a in active if a["zone_uid"] == uid]
        critical = sorted({a["code"] for a in zone_alerts if a["code"] in CRITICAL_ALERT_CODES})
        safety = snapshot.get(uid) or {}
        pumps = list(safety.get("pumps") or [])
        water = water_states.get(uid)
        lock_codes = sorted({c for p in pumps for c in p.get("lock_codes") or []} | set(critical))
        targets = targets_now(g, uid, now)
        zone_readings = [
            {**r, "target": (t := targets.get(r["metric"])), "state": reading_state(r["value"], t, r["stale"])}
            for r in readings.get(z.id, [])
        ]
        out.append(
            {
                "uid": uid,
                "name": z.name or uid,
                "water": water,
                "pumps": pumps,
                "readings": zone_readings,
                "alerts": {"active": len(zone_alerts), "critical": len([a for a in zone_alerts if _critical(a)])},
                "locked": bool(lock_codes) or any(p.get("locked") for p in pumps),
                "lock_codes": lock_codes,
            }
        )
    return out


async def zone_detail(g: WebServices, zone_uid: str) -> dict[str, Any] | None:
    """One zone: its summary plus alerts, water-change history, events and recent commands."""
    zone_id = g.registry.zone_id(zone_uid)
    if zone_id is None:
        return None
    now = g.clock.time()
    active = await alerts_with_zone(g, await g.alerts.active(zone_id, any_zone=False))
    summary = (await zone_summaries(g, now, active, only=zone_uid))[0]
    history = await events_store.of_types(g.db, zone_id, WATER_HISTORY_TYPES, 20)
    tz = g.settings.gateway.timezone
    events = await g.alerts.events(zone_id, limit=30)
    return {
        "now": now,
        "zone": summary,
        "plan": zone_plan(g, zone_uid, now, summary["water"]),
        "alerts": {"active": active},
        "water_changes": [_with_text(e, tz) for e in history],
        "events": [_with_text(e, tz) for e in events],
        "commands": await recent_commands(g, zone_id, limit=20),
    }


async def nodes_view(g: WebServices) -> dict[str, Any]:
    """Every known node with lifecycle, online state, firmware, last seen and signal."""
    now = g.clock.time()
    rows = await nodes_store.nodes(g.db, by_zone=True)
    cached = {n.uid: n for n in g.registry.nodes()}
    nodes = []
    for r in rows:
        info = cached.get(r.uid)
        last_seen = r.last_seen_at
        nodes.append(
            {
                "uid": r.uid,
                "hardware_id": r.hardware_id,
                "node_type": r.node_type,
                "zone_uid": r.zone_uid,
                "lifecycle_state": r.lifecycle_state,
                # The registry's cache is the live truth; the row follows it.
                "online": info.online if info is not None else r.online,
                "firmware_version": r.firmware_version,
                "hardware_revision": r.hardware_revision,
                "first_seen_at": r.first_seen_at,
                "last_seen_at": last_seen,
                "last_seen_age_s": None if last_seen is None else round(max(0.0, now - last_seen), 1),
                "rssi": r.rssi,
                "uptime_s": r.uptime_s,
                "free_heap": r.free_heap,
                "transport": r.transport,
                # Message identity (boot, seq): None for a node that sends none (older firmware).
                "sequence": g.sequences.stats(r.id),
            }
        )
    return {"now": now, "nodes": nodes}


async def alerts_view(g: WebServices, limit: int = 100) -> dict[str, Any]:
    """Active alerts, recent alerts of any status, and the zones with a safety lock to reset."""
    now = g.clock.time()
    active = await alerts_with_zone(g, await g.alerts.active())
    recent = await alerts_with_zone(g, await g.alerts.recent(limit))
    locks = [
        {"zone_uid": z["uid"], "name": z["name"], "lock_codes": z["lock_codes"]}
        for z in await zone_summaries(g, now, active)
        if z["locked"]
    ]
    return {"now": now, "active": active, "recent": recent, "locked_zones": locks}


def sync_view(g: WebServices) -> dict[str, Any]:
    """Per-stream backlog and lag of the upstream sync, reachability and the storage level."""
    status = g.sync.status()
    retention = status.get("retention") or {}
    uplink = status.get("uplink") if status.get("enabled") else None
    if not uplink:
        return {"available": False, "streams": [], "upstream": None, "storage_level": retention.get("level")}
    streams = []
    for name, st in sorted((uplink.get("streams") or {}).items()):
        streams.append(
            {
                "stream": name,
                "state": st.get("state"),
                "backlog_rows": st.get("backlog_rows"),
                "lag_s": st.get("oldest_unsynced_age_s"),
                "last_success_at": st.get("last_success_at"),
                "send_rate_rows_s": st.get("send_rate_rows_s"),
                "catch_up_eta_s": st.get("catch_up_eta_s"),
                "last_error": st.get("last_error"),
            }
        )
    return {
        "available": True,
        "streams": streams,
        "upstream": uplink.get("upstream"),
        "storage_level": retention.get("level"),
        "generation": uplink.get("generation"),
        "conflicts": uplink.get("conflicts"),
    }


async def alerts_with_zone(g: WebServices, alerts: Sequence[AlertJson]) -> list[dict[str, Any]]:
    """Alerts with their zone uid (the API speaks uids, not database ids)."""
    by_id = {zid: uid for uid, zid in g.registry.zone_uids().items()}
    out = []
    for a in alerts:
        item = {k: v for k, v in a.items() if k != "zone_id"}
        zone_id = a.get("zone_id")
        item["zone_uid"] = by_id.get(zone_id) if zone_id is not None else None
        item["safety"] = a["code"] in CRITICAL_ALERT_CODES
        out.append(item)
    return out


async def recent_commands(g: WebServices, zone_id: int | None, limit: int = 50) -> list[CommandJson]:
    """Newest commands with their zone and node uids (the shape of GET /api/commands/{cmd_id})."""
    return await commands_store.recent(g.db, zone_id, limit)


def _critical(alert: dict[str, Any]) -> bool:
    return alert.get("severity") == "critical"


def _safety_zones(g: WebServices) -> dict[str, Any]:
    zones: dict[str, Any] = g.safety.snapshot().get("zones") or {}
    return zones


def _safety_loop(g: WebServices) -> dict[str, Any]:
    snap = g.safety.snapshot()
    return {"ticks": int(snap.get("ticks") or 0), "watchdog_tripped": bool(snap.get("watchdog_tripped"))}


def _water_states(g: WebServices) -> dict[str, dict[str, Any]]:
    return {uid: _water_view(d) for uid, d in g.water.snapshot().items()}


def _water_view(d: dict[str, Any]) -> dict[str, Any]:
    """The water machine's persisted state in the API's words (0.0 start times mean never)."""
    changing = d.get("phase") in CHANGE_PHASES
    return {
        # During a change the old solution is being replaced: its age means nothing until the new one is made.
        "changing": changing,
        "phase": d.get("phase"),
        "phase_started_at": d.get("phase_started_at_wall") or None,
        "solution_started_at": d.get("solution_started_at") or None,
        "change_started_at": d.get("change_started_at_wall") or None,
        "trigger": d.get("trigger"),
        "last_error": d.get("last_error"),
        "recirc_on": (d.get("recirc") or {}).get("on"),
    }


async def _readings_by_zone(g: WebServices, now: float) -> dict[int, list[dict[str, Any]]]:
    rows = await samples_store.latest(g.db)
    stale_after = g.settings.safety.stale_after_s
    by_zone: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        metric = CANONICAL_METRICS.get(r.metric_type)
        if metric is None:
            continue
        age = max(0.0, now - r.received_at)
        by_zone.setdefault(r.zone_id, []).append(
            {
                "metric": metric.value,
                "label": LABELS[metric],
                "unit": UNITS[metric],
                "value": r.value,
                "node_uid": r.node_uid,
                "channel": r.channel,
                "ts": r.ts,
                "received_at": r.received_at,
                "age_s": round(age, 1),
                "stale": age > stale_after,
            }
        )
    for items in by_zone.values():
        items.sort(key=lambda x: (METRIC_ORDER[Metric(x["metric"])], x["node_uid"] or ""))
    return by_zone


def _with_text(event: EventJson, tz: str) -> dict[str, object]:
    """The event with a sentence for people (local times, no key=value)."""
    return {**event, "text": event_sentence(event["type"], event["details"], tz)}
