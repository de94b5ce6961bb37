"""What the web side is given (``WebServices``), its per-app state, and how handlers reach both."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from gateway.alerts import Alerts
from gateway.automation.service import AutomationService
from gateway.broker.server import EmbeddedBroker
from gateway.clock import Clock
from gateway.commands import CommandService
from gateway.ingest import Ingest
from gateway.prometheus import Metrics
from gateway.registry import Registry
from gateway.router import Router
from gateway.safety.service import SafetyService
from gateway.sequences import NodeSequences
from gateway.settings import Settings
from gateway.storage import StorageGuard
from gateway.store.db import Database
from gateway.upstream.sync import UpstreamSync
from gateway.water.service import WaterService
from gateway.web.ratelimit import FailureLimiter
from gateway.web.sessions import SessionStore
from gateway.writer import TelemetryWriter

if TYPE_CHECKING:
    from gateway.web.templating import PageTemplates


class SimulationView(Protocol):
    """The demo's simulated greenhouse, as the pages show it."""

    @property
    def simulated_until(self) -> float | None:
        """Wall time up to which history was simulated (None before it was written)."""
        ...


@dataclass(frozen=True, slots=True)
class WebServices:
    """The services the web reads and drives; built once by the composition root."""

    settings: Settings
    clock: Clock
    metrics: Metrics
    db: Database
    alerts: Alerts
    registry: Registry
    sequences: NodeSequences
    commands: CommandService
    ingest: Ingest
    writer: TelemetryWriter
    router: Router
    broker: EmbeddedBroker
    storage: StorageGuard
    safety: SafetyService
    water: WaterService
    sync: UpstreamSync
    automation: AutomationService
    simulation: SimulationView | None
    ready: asyncio.Event  # set by the supervisor once every service runs
    uptime_s: Callable[[], float]


@dataclass
class WebState:
    """Everything the handlers share; one per aiohttp application."""

    services: WebServices
    sessions: SessionStore
    limiter: FailureLimiter
    templates: PageTemplates


STATE_KEY = web.AppKey("web_state", WebState)


def state(request: web.Request) -> WebState:
    """The web state of this request's application."""
    return request.app[STATE_KEY]


def gw(request: web.Request) -> WebServices:
    """The services behind this request."""
    return request.app[STATE_KEY].services
