"""Composition root: turns Settings into a running Gateway with the services the mode needs."""

from __future__ import annotations

from gateway.app import Gateway
from gateway.clock import Clock
from gateway.settings import Settings


async def build_gateway(settings: Settings, clock: Clock | None = None, simulate: bool = False) -> Gateway:
    """Build the gateway; with ``simulate`` also the simulated greenhouse (demo)."""
    gateway = Gateway(settings, clock)
    if simulate:
        from gateway.sim.demo import attach_simulation

        attach_simulation(gateway)
    return gateway
