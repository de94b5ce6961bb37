"""The services the demo's simulated greenhouse uses, handed over by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.hardware import Hardware
from gateway.automation.service import AutomationService
from gateway.broker.server import EmbeddedBroker
from gateway.clock import Clock
from gateway.registry import Registry
from gateway.settings import Settings
from gateway.store.db import Database
from gateway.water.service import WaterService


@dataclass(frozen=True, slots=True)
class SimServices:
    """The simulated greenhouse drives the (simulated) hardware, talks MQTT to the broker and seeds the history."""

    settings: Settings
    clock: Clock
    db: Database
    registry: Registry
    hardware: Hardware
    broker: EmbeddedBroker
    automation: AutomationService
    water: WaterService
