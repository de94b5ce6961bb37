"""Node registry at the edge: node_hello registers, heartbeats keep nodes online, silence marks them offline."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from firmware_contracts.models import ChannelSpec, Heartbeat, NodeHello, NodeStatus
from firmware_contracts.topics import config_topic
from gateway.alert_throttle import AlertThrottle
from gateway.alerts import Alerts
from gateway.clock import Clock
from gateway.node_config import node_channels, node_config
from gateway.prometheus import Metrics
from gateway.ratelog import RateLimitedLog
from gateway.router import M, RejectedMessage, Routed
from gateway.settings import NodeConfig, ZoneConfig
from gateway.store import nodes as store
from gateway.store.db import Database
from gateway.store.nodes import NodeAssignment, NodeRow, NodeWrite
from gateway.water.config import water_cycle_to_dict

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, int, bool], Awaitable[None]]
UNASSIGNED_ZONE = "unassigned"


class Lifecycle(StrEnum):
    """Node lifecycle at the edge."""

    REGISTERED_BACKEND = "REGISTERED_BACKEND"
    ASSIGNED_TO_ZONE = "ASSIGNED_TO_ZONE"
    DECOMMISSIONED = "DECOMMISSIONED"


@dataclass(frozen=True)
class NodeInfo:
    """What the hot paths need to know about a node, cached in memory."""

    id: int
    uid: str
    hardware_id: str
    zone_id: int | None
    zone_uid: str | None
    validated: bool
    online: bool
    node_type: str


class Registry:
    """Creates/updates nodes from node_hello, tracks health, answers with the node's retained config."""

    def __init__(
        self,
        db: Database,
        alerts: Alerts,
        clock: Clock,
        metrics: Metrics,
        publish: Publish,
        greenhouse_uid: str,
        heartbeat_interval_s: float,
        offline_after_missed: int,
        telemetry_interval_s: float = 5,
    ) -> None:
        self._db = db
        self._alerts = alerts
        self._clock = clock
        self._metrics = metrics
        self._publish = publish
        self._gh = greenhouse_uid
        self._hb_interval = heartbeat_interval_s
        self._telemetry_interval = telemetry_interval_s
        self._channels: dict[str, tuple[ChannelSpec, ...]] = {}  # node uid → its actuator channels
        self._offline_after = heartbeat_interval_s * offline_after_missed
        self._by_uid: dict[str, NodeInfo] = {}
        self._zones: dict[str, int] = {}
        self._assign_by_hw: dict[str, NodeConfig] = {}
        self._assign_by_uid: dict[str, NodeConfig] = {}
        self._last_seen_mono: dict[str, float] = {}
        # Online/offline transitions one at a time: a last will, the missed-heartbeat supervision and a
        # heartbeat can arrive together, and each must see the state the previous one left.
        self._transition = asyncio.Lock()
        self._conflict_alerts = AlertThrottle(alerts, clock)
        self._ratelog = RateLimitedLog(log, 60.0, clock.monotonic)

    # ---- configuration -------------------------------------------------------------------
    async def apply_config(self, zones: Iterable[ZoneConfig], nodes: Iterable[NodeConfig]) -> None:
        """Upsert zones and node assignments from config (local file or upstream) and reload the cache.

        On a full disk the stored zones and nodes are used as they are (logged): the gateway still starts.
        """
        zones = list(zones)
        self._channels = node_channels(zones)
        try:
            await self._store_config(zones, list(nodes))
        except sqlite3.OperationalError as exc:
            log.error("could not store the zone/node config (%s): running with the stored one", exc)
        await self._reload()

    async def _store_config(self, zones: list[ZoneConfig], nodes: list[NodeConfig]) -> None:
        now = self._clock.time()
        await store.upsert_zones(self._db, [
            (zone.uid, zone.name or zone.uid,
             {"water_cycle": water_cycle_to_dict(zone.water_cycle) if zone.water_cycle is not None else {}})
            for zone in zones
        ], now)
        self._zones = await store.zone_ids(self._db)
        self._assign_by_hw = {n.hardware_id: n for n in nodes}
        self._assign_by_uid = {n.uid: n for n in nodes}
        assignments = []
        for n in nodes:
            zone_id = self._zones.get(n.zone) if n.zone else None
            state = Lifecycle.ASSIGNED_TO_ZONE if zone_id else Lifecycle.REGISTERED_BACKEND
            assignments.append(NodeAssignment(n.hardware_id, zone_id, state.value))
        await store.assign_nodes(self._db, assignments, now)

    async def _reload(self) -> None:
        if not self._zones:  # the config could not be stored: the zones the database knows
            self._zones = await store.zone_ids(self._db)
        self._by_uid = {r.uid: _info(r) for r in await store.nodes(self._db)}
        now = self._clock.monotonic()
        for uid in self._by_uid:
            self._last_seen_mono.setdefault(uid, now)
        self._metrics.nodes_online.set(sum(1 for n in self._by_uid.values() if n.online))

    def zone_id(self, zone_uid: str) -> int | None:
        """Database id of a zone uid."""
        return self._zones.get(zone_uid)

    def zone_uids(self) -> dict[str, int]:
        """All zones: uid → id."""
        return dict(self._zones)

    def get(self, node_uid: str) -> NodeInfo | None:
        """Cached node by uid."""
        return self._by_uid.get(node_uid)

    def node_zone_uid(self, node_uid: str) -> str | None:
        """The zone uid the node is assigned to, or None (unknown or unassigned)."""
        node = self._by_uid.get(node_uid)
        return None if node is None else node.zone_uid

    def nodes(self) -> list[NodeInfo]:
        """All cached nodes."""
        return list(self._by_uid.values())

    # ---- handlers ------------------------------------------------------------------------
    async def on_hello(self, routed: Routed[NodeHello]) -> None:
        """Register or update the node and answer with its retained config.

        A hello that would take another node's uid or hardware id is refused before anything is written:
        the uid a hello may claim is the authenticated MQTT account's (nodes log in with their uid).
        """
        hello = routed.payload
        assert isinstance(hello, dict)  # node_hello's schema admits only an object
        username = routed.message.username
        claimed = routed.model.node_uid
        if username and claimed and claimed != username:
            await self._identity_conflict(hello, username, f"logged in as {username} but claims uid {claimed}")
        claimed_uid = username or claimed
        uid, existing = await self._resolve_uid(hello, claimed_uid)
        if username and uid != username:
            await self._identity_conflict(hello, username, f"hardware {routed.model.hardware_id} belongs to {uid}")
        holder = await store.hardware_of(self._db, uid)
        if holder is not None and holder != routed.model.hardware_id:
            await self._identity_conflict(hello, username, f"uid {uid} belongs to hardware {holder}")
        node = await self.register(hello, claimed_uid=claimed_uid, resolved=(uid, existing))
        await self.publish_config(node)

    async def _identity_conflict(self, hello: dict[str, Any], username: str | None, why: str) -> None:
        """Alert (at most once per account per interval) and refuse the hello; nothing was written."""
        who = username or str(hello.get("node_uid") or hello.get("hardware_id"))
        await self._conflict_alerts.raise_alert(
            "infra_node_identity_conflict",
            scope=who,
            details={"account": username, "hardware_id": str(hello.get("hardware_id"))[:64],
                     "claimed_uid": hello.get("node_uid"), "problem": why},
        )
        raise RejectedMessage("node_identity_conflict", f"hello from {who} refused: {why}")

    async def _resolve_uid(self, hello: dict[str, Any], claimed_uid: str | None) -> tuple[str, NodeRow | None]:
        """The uid a hello maps to (config assignment, then the stored row, then the claim) and the stored row."""
        hardware_id = str(hello["hardware_id"])
        assignment = self._assign_by_hw.get(hardware_id) or (
            self._assign_by_uid.get(claimed_uid) if claimed_uid else None
        )
        existing = await store.node_by_hardware(self._db, hardware_id)
        if assignment is not None:
            return assignment.uid, existing
        if existing is not None:
            return existing.uid, existing
        return claimed_uid or generated_uid(str(hello.get("node_type", "node")), hardware_id), existing

    async def register(
        self, hello: dict[str, Any], claimed_uid: str | None, resolved: tuple[str, NodeRow | None] | None = None
    ) -> NodeInfo:
        """Create or update a node from a hello payload; returns its cached info."""
        hardware_id = str(hello["hardware_id"])
        now = self._clock.time()
        assignment = self._assign_by_hw.get(hardware_id) or (
            self._assign_by_uid.get(claimed_uid) if claimed_uid else None
        )
        uid, existing = resolved if resolved is not None else await self._resolve_uid(hello, claimed_uid)
        zone_id = self._zones.get(assignment.zone) if assignment and assignment.zone else None
        if zone_id is None and existing is not None and assignment is None:
            zone_id = existing.zone_id
        state = Lifecycle.ASSIGNED_TO_ZONE if zone_id is not None else Lifecycle.REGISTERED_BACKEND
        node = NodeWrite(uid, hardware_id, str(hello.get("node_type", "")), hello.get("fw_version"),
                         hello.get("hardware_revision"), zone_id, state.value, hello)
        try:
            await store.write_node(self._db, node, new=existing is None, zone_uid=self._zone_uid(zone_id), now=now)
        except sqlite3.IntegrityError as exc:  # a uid taken between the check and the write: refuse, never crash
            raise RejectedMessage("node_identity_conflict", f"hardware {hardware_id} as {uid}: {exc}") from None
        await self._reload()
        info = self._by_uid[uid]
        await self._mark_seen(info)
        # Per hello: a node rebooting in a loop must not fill the journal (one line per node a minute).
        self._ratelog.info(
            f"registered:{uid}",
            "node %s (%s, %s) registered: %s zone=%s",
            uid,
            hardware_id,
            hello.get("fw_version"),
            state.value,
            info.zone_uid,
        )
        return info

    async def publish_config(self, node: NodeInfo) -> None:
        """Publish the node's config (its actuator channels from the zones' wiring), retained, on its config topic."""
        zone = node.zone_uid or UNASSIGNED_ZONE
        config = node_config(node.uid, zone, self._gh, self._channels.get(node.uid, ()),
                             self._telemetry_interval, int(self._hb_interval))
        await self._publish(config_topic(self._gh, zone, node.uid), json.dumps(config.to_payload()).encode(), 1, True)

    async def republish_configs(self) -> None:
        """Re-publish every known node's retained config (the broker's retained store is memory-only)."""
        for node in self.nodes():
            await self.publish_config(node)

    async def on_heartbeat(self, routed: Routed[Heartbeat]) -> None:
        """Update health fields and bring an offline node back."""
        node = self._require(routed)
        hb = routed.model
        await store.record_heartbeat(
            self._db, node.id, hb.rssi, hb.uptime_s, hb.free_heap, self._clock.time()
        )
        await self._mark_seen(node)

    async def on_status(self, routed: Routed[NodeStatus]) -> None:
        """The node's online/offline status (its last will says offline)."""
        node = self._require(routed)
        if not routed.model.online:
            await self._mark_offline(node, "last_will")
        else:
            await self._mark_seen(node)

    def touch(self, node: NodeInfo) -> None:
        """Cheap in-memory liveness update from telemetry (DB last_seen follows on heartbeat/offline)."""
        self._last_seen_mono[node.uid] = self._clock.monotonic()

    async def supervise_once(self) -> None:
        """Mark nodes silent for longer than N heartbeat intervals offline."""
        now = self._clock.monotonic()
        for node in list(self._by_uid.values()):
            if node.online and now - self._last_seen_mono.get(node.uid, now) > self._offline_after:
                await self._mark_offline(node, "missed_heartbeats")

    async def supervise(self) -> None:
        """Run ``supervise_once`` forever."""
        while True:
            await self._clock.sleep(max(0.05, self._hb_interval / 2))
            await self.supervise_once()

    # ---- internals -----------------------------------------------------------------------
    def _require(self, routed: Routed[M]) -> NodeInfo:
        uid = routed.topic.node or ""
        node = self._by_uid.get(uid)
        if node is None:
            raise RejectedMessage("unknown_node", uid)
        return node

    async def _mark_seen(self, node: NodeInfo) -> None:
        self._last_seen_mono[node.uid] = self._clock.monotonic()
        if self._by_uid.get(node.uid, node).online and not self._transition.locked():
            return  # the common case: a heartbeat from a node that is online, nothing in progress
        async with self._transition:
            if self._by_uid.get(node.uid, node).online:
                return
            await store.set_online(self._db, node.id, True, self._clock.time())
            resolved = await self._alerts.resolve("infra_node_offline", zone_id=node.zone_id, scope=node.uid)
            if resolved:
                await self._alerts.record_event(node.zone_id, "NODE_ONLINE", {"node_uid": node.uid})
            # Shown online only once recorded (row, alert resolved, event), like offline below.
            self._by_uid[node.uid] = replace(self._by_uid.get(node.uid, node), online=True)
            self._metrics.nodes_online.set(sum(1 for n in self._by_uid.values() if n.online))

    async def _mark_offline(self, node: NodeInfo, reason: str) -> None:
        async with self._transition:
            if not self._by_uid.get(node.uid, node).online:
                return
            await store.set_online(self._db, node.id, False, self._clock.time())
            await self._alerts.raise_alert(
                "infra_node_offline",
                zone_id=node.zone_id,
                scope=node.uid,
                details={"node_uid": node.uid, "reason": reason},
            )
            await self._alerts.record_event(node.zone_id, "NODE_OFFLINE", {"node_uid": node.uid, "reason": reason})
            # Shown offline only once the alert and the event exist: whoever sees "offline" (the API, the
            # page, a test) finds the alert too.
            self._by_uid[node.uid] = replace(self._by_uid.get(node.uid, node), online=False)
            self._metrics.nodes_online.set(sum(1 for n in self._by_uid.values() if n.online))

    def _zone_uid(self, zone_id: int | None) -> str | None:
        for uid, zid in self._zones.items():
            if zid == zone_id:
                return uid
        return None


def generated_uid(node_type: str, hardware_id: str) -> str:
    """A stable uid for a node nobody assigned yet (derived from its hardware id)."""
    digest = hashlib.sha256(hardware_id.encode()).hexdigest()[:8]
    safe_type = "".join(c for c in node_type if c.isalnum())[:12] or "node"
    return f"nd-{safe_type}-{digest}"


def _info(row: NodeRow) -> NodeInfo:
    return NodeInfo(
        id=row.id,
        uid=row.uid,
        hardware_id=row.hardware_id,
        zone_id=row.zone_id,
        zone_uid=row.zone_uid,
        validated=row.validated,
        online=row.online,
        node_type=row.node_type,
    )
