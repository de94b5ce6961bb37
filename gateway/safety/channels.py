"""The pump channels the safety loop watches, built from the zone actuators and the relay config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.safety.rules import ChannelInputs, ChannelLimits, ChannelSafetyState, FailSafe
from gateway.settings import SafetySection, Settings

# Per role: does the flow sensor belong to it, does the level move while it runs, may it run dry?
_ROLE_PROFILE: dict[str, dict[str, Any]] = {
    "recirc": {"flow_sensor": True, "level_change_min": None, "dry_check": True},
    "drain": {"flow_sensor": False, "level_change_min": True, "dry_check": False},
    "fill": {"flow_sensor": False, "level_change_min": True, "dry_check": False},
    "irrigation": {"flow_sensor": False, "level_change_min": None, "dry_check": True},
}


@dataclass
class PumpChannel:
    """One pump: where it is wired, its limits, and the safety state between ticks."""

    zone_id: int
    zone_uid: str
    role: str
    channel: str
    node_uid: str | None
    relay: Any | None  # drivers.relay.PumpRelay for gateway-attached pumps
    monitor: Any | None  # drivers.current_monitor.AsyncCurrentMonitor measuring this pump
    limits: ChannelLimits
    nominal_flow_l_min: float | None = None
    state: ChannelSafetyState = field(default_factory=ChannelSafetyState)
    desired_on: bool = False
    last_inputs: ChannelInputs | None = None
    current_a: float | None = None
    current_read_mono: float | None = None
    lock_code: str | None = None
    failures: list[float] = field(default_factory=list)
    run_started_wall: float | None = None
    flow_samples: list[tuple[float, float]] = field(default_factory=list)

    @property
    def key(self) -> tuple[int, str]:
        """(zone id, channel)."""
        return self.zone_id, self.channel

    @property
    def relay_on(self) -> bool:
        """What we command (node pumps: what we last asked the node for)."""
        return bool(self.relay.pump_on) if self.relay is not None else self.desired_on

    @property
    def fail_safe(self) -> FailSafe:
        """NC pumps run when the coil is de-energised."""
        if self.relay is not None and self.relay.fail_safe_mode == "NC":
            return FailSafe.NC
        return FailSafe.NO


def limits_for(role: str, channel: str, fail_safe: FailSafe, has_current: bool, s: SafetySection) -> ChannelLimits:
    """Default limits of a channel from the safety settings and its role."""
    profile = _ROLE_PROFILE.get(role, {"flow_sensor": False, "level_change_min": None, "dry_check": True})
    return ChannelLimits(
        overcurrent_a=s.overcurrent_a,
        idle_current_a=s.idle_current_a,
        min_flow_l_min=s.min_flow_l_min,
        no_flow_grace_s=s.no_flow_grace_s,
        stale_after_s=s.stale_after_s,
        min_water_level=s.min_water_level if profile["dry_check"] else None,
        level_change_min=s.level_change_min if profile["level_change_min"] else None,
        current_sensor=has_current,
        flow_sensor=bool(profile["flow_sensor"]),
        level_sensor=True,
        channel=channel,
        fail_safe=fail_safe,
    )


def build_channels(settings: Settings, zone_ids: dict[str, int], hardware: Any | None) -> list[PumpChannel]:
    """One PumpChannel per pump actuator of every zone (gateway relays and node channels)."""
    relays = hardware.relays if hardware is not None else {}
    monitors: dict[str, Any] = {}
    if hardware is not None:
        for cfg in hardware.config.ina209:
            if cfg.channel is not None:
                monitors[cfg.channel] = hardware.monitors[cfg.key]
    channels: list[PumpChannel] = []
    for zone in settings.zones:
        zone_id = zone_ids[zone.uid]
        for role, ref in zone.actuators.items():
            if role not in _ROLE_PROFILE:
                continue  # dosers and lights are not pumps the safety loop supervises
            relay = relays.get(ref.channel) if ref.node_uid is None else None
            fail_safe = FailSafe.NC if relay is not None and relay.fail_safe_mode == "NC" else FailSafe.NO
            monitor = monitors.get(ref.channel) if relay is not None else None
            ch = PumpChannel(
                zone_id=zone_id,
                zone_uid=zone.uid,
                role=role,
                channel=ref.channel,
                node_uid=ref.node_uid,
                relay=relay,
                monitor=monitor,
                limits=limits_for(role, ref.channel, fail_safe, monitor is not None, settings.safety),
                nominal_flow_l_min=ref.flow_l_min,
            )
            ch.desired_on = ch.relay_on
            channels.append(ch)
    return channels
