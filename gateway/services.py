"""The bundle of every long-lived service of a running gateway (built by ``gateway.compose``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from drivers.hardware import Hardware
from drivers.serial_link import SerialLink
from drivers.watchdog import RelayWatchdog
from gateway.alerts import Alerts
from gateway.automation.service import AutomationService
from gateway.broker.server import EmbeddedBroker
from gateway.clock import Clock
from gateway.commands import CommandService
from gateway.housekeeping import Housekeeping
from gateway.ingest import Ingest
from gateway.prometheus import Metrics
from gateway.readings import LatestReadings
from gateway.registry import Registry
from gateway.router import Router
from gateway.safety.gate import SafetyGate
from gateway.safety.service import SafetyService
from gateway.sequences import NodeSequences
from gateway.settings import Settings
from gateway.sim.demo import DemoSimulation
from gateway.storage import StorageGuard
from gateway.store.db import Database
from gateway.transport import NodeTransport
from gateway.upstream.sync import UpstreamSync
from gateway.water.service import WaterService
from gateway.web.server import WebServer
from gateway.writer import TelemetryWriter


@dataclass(frozen=True, slots=True)
class Services:
    """Every long-lived component of a running gateway, built once by ``build_services``."""

    settings: Settings
    clock: Clock
    metrics: Metrics
    db: Database
    alerts: Alerts
    latest: LatestReadings
    router: Router
    broker: EmbeddedBroker
    transport: NodeTransport
    registry: Registry
    sequences: NodeSequences
    writer: TelemetryWriter
    ingest: Ingest
    storage: StorageGuard
    hardware: Hardware
    gate: SafetyGate  # the one door to every pump
    watchdog: RelayWatchdog
    safety: SafetyService
    commands: CommandService
    water: WaterService
    sync: UpstreamSync
    automation: AutomationService
    housekeeping: Housekeeping
    serial_links: tuple[SerialLink, ...]
    web: WebServer
    simulation: DemoSimulation | None  # the simulated greenhouse of the demo
    ready: asyncio.Event  # set by the supervisor once every service runs
    corrupted: asyncio.Event  # set when SQLite reports corruption at run time (the file is marked already)
    started_mono: float

    def uptime_s(self) -> float:
        """Seconds since the services were built."""
        return self.clock.monotonic() - self.started_mono
