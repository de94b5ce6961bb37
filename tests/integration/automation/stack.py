"""Real parts for automation tests: SQLite file, registry with nodes, CommandService with a recording publish."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.alerts import Alerts
from gateway.clock import Clock, ManualClock
from gateway.commands import CommandService
from gateway.prometheus import Metrics
from gateway.readings import LatestReadings, Reading
from gateway.registry import Registry
from gateway.safety.gate import SafetyGate
from gateway.settings import NodeConfig, SafetySection, ZoneConfig
from gateway.store.db import Database
from gateway.telemetry_metrics import Metric

Publish = Callable[[str, bytes, int, bool], Awaitable[None]]


class Recorder:
    """A publish function that keeps every message (topic, decoded JSON)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.messages.append((topic, json.loads(payload)))

    def commands(self, cmd: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Published commands (optionally of one kind)."""
        return [(t, b) for t, b in self.messages if t.endswith("/command") and (cmd is None or b["cmd"] == cmd)]


class FakeZoneState:
    """ZoneState with switches a test flips."""

    def __init__(self) -> None:
        self.not_circulating: set[int] = set()
        self.locked_zones: set[int] = set()

    def circulating(self, zone_id: int) -> bool:
        return zone_id not in self.not_circulating

    def locked(self, zone_id: int) -> bool:
        return zone_id in self.locked_zones


@dataclass
class Stack:
    """The wired parts."""

    db: Database
    clock: Clock
    alerts: Alerts
    registry: Registry
    commands: CommandService
    publish: Any
    gate: SafetyGate
    latest: LatestReadings

    def set_level(self, zone_id: int, level: float) -> None:
        """The zone's tank level as the water node would report it (now)."""
        self.latest.update(zone_id, Metric.WATER_LEVEL, Reading(level, self.clock.monotonic(), self.clock.time(), 0,
                                                                None))

    async def run_dry(self, zone_uid: str) -> None:
        """The tank is (almost) empty: the real interlock refuses every pump start with ``dry_run``."""
        self.set_level(await self.zone_id(zone_uid), 2.0)

    async def refill(self, zone_uid: str) -> None:
        """The tank is full again and the operator resolved the dry-run alert."""
        zid = await self.zone_id(zone_uid)
        self.set_level(zid, 80.0)
        for alert in await self.alerts.active(zid, any_zone=False):
            await self.alerts.resolve(alert["code"], zone_id=zid, scope=alert["scope"], by="test")

    async def zone_id(self, uid: str) -> int:
        zid = self.registry.zone_id(uid)
        assert zid is not None
        return zid

    async def events(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in reversed(await self.alerts.events(limit=100_000)) if e["type"] == type_]

    async def close(self) -> None:
        await self.db.close()


async def open_stack(path: Path, zones: Sequence[ZoneConfig], nodes: Sequence[NodeConfig], *,
                     clock: Clock | None = None, publish: Any = None) -> Stack:
    """Open the database, create zones and registered nodes, and build the command path."""
    clock = clock or ManualClock()
    db = Database(path)
    await db.open()
    metrics = Metrics()
    alerts = Alerts(db, clock, metrics)
    publish = publish if publish is not None else Recorder()
    registry = Registry(db, alerts, clock, metrics, publish, "gh1", 30.0, 3)
    await registry.apply_config(zones, nodes)
    for n in nodes:
        await registry.register({"hardware_id": n.hardware_id, "node_type": n.node_type, "fw_version": "1.0"}, n.uid)
    latest = LatestReadings()
    # The real gate with no gateway relays; readings never go stale here (tests advance the clock by hours).
    gate = SafetyGate([], db, alerts, latest, clock, metrics, SafetySection(stale_after_s=1e9), publish, registry,
                      "gh1")
    commands = CommandService(db, alerts, registry, clock, metrics, gate, 30.0)
    stack = Stack(db, clock, alerts, registry, commands, publish, gate, latest)
    for zid in registry.zone_uids().values():
        stack.set_level(zid, 80.0)
    return stack


async def settle(settled: Callable[[], bool]) -> None:
    """Let the loop (and aiosqlite's thread) run until ``settled()``."""
    for i in range(20_000):
        if settled():
            return
        await asyncio.sleep(0 if i < 20 else 0.0005)
    raise AssertionError("the service did not settle")


async def advance_settled(clock: ManualClock, seconds: float, step: float, settled: Callable[[], bool]) -> None:
    """Advance a manual clock step by step, settling after each step so time never runs ahead of the service."""
    end = clock.monotonic() + seconds
    while clock.monotonic() < end - 1e-9:
        await clock.advance(min(step, end - clock.monotonic()))
        await settle(settled)


def parked(sched: Any, clock: ManualClock) -> Callable[[], bool]:
    """Settled predicate for a Scheduler's clock driver."""
    def settled() -> bool:
        until = sched.sleeping_until()
        return until is not None and until > clock.monotonic()

    return settled
