"""The services the web shows but does not own (safety, water, sync), as the web sees them.

The Gateway builds them before the web starts; typed here as Protocols because the Gateway holds
them as ``Any`` (they are built late, in ``run()``, once the hardware is open).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.app import Gateway


class SafetyView(Protocol):
    """Pump safety: per-zone snapshot of water phase and pumps; operator reset."""

    def snapshot(self) -> dict[str, Any]:
        """{"zones": {zone_uid: {"pumps": [...]}}, "ticks": int, "watchdog_tripped": bool}."""
        ...

    async def reset(self, zone_uid: str, by: str) -> list[str]:
        """Resolve the zone's safety alerts and unlock its channels; returns the resolved codes."""
        ...


class WaterControl(Protocol):
    """The water-change machine: per-zone state and operator actions (False: the zone has no water cycle)."""

    def snapshot(self) -> dict[str, Any]:
        """{zone_uid: {"phase", "phase_started_at_wall", "solution_started_at", "last_error", "recirc", …}}."""
        ...

    async def start_change(self, zone_uid: str, by: str) -> bool:
        """Start a water change now."""
        ...

    async def abort(self, zone_uid: str, by: str) -> bool:
        """Abort a running water change."""
        ...

    async def ack_failed(self, zone_uid: str, by: str) -> bool:
        """Acknowledge a FAILED water change so the zone returns to normal recirculation."""
        ...


class SyncView(Protocol):
    """Upstream sync (``gateway.upstream.UpstreamSync``): progress, reachability, storage."""

    def status(self) -> dict[str, Any]:
        """{"enabled", "uplink": {"streams": {name: {...}}, "upstream": {...}} | None, "downlink", "retention"}."""
        ...


def safety_of(g: Gateway) -> SafetyView:
    """The safety service."""
    safety: SafetyView = g.safety
    return safety


def water_of(g: Gateway) -> WaterControl:
    """The water-cycle service."""
    water: WaterControl = g.water
    return water


def sync_of(g: Gateway) -> SyncView:
    """The upstream sync (it always runs retention; the uplink only with an upstream URL)."""
    sync: SyncView = g.sync
    return sync
