"""The pump channels the safety loop watches, built from the zone actuators and the relay config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from drivers.interfaces import CurrentMonitor, Relay
from gateway.safety.rules import ChannelInputs, ChannelLimits, ChannelSafetyState, FailSafe
from gateway.settings import SafetySection, Settings
from gateway.water.config import WaterCycleConfig

if TYPE_CHECKING:  # opening hardware pulls in gpiozero/smbus2: only the composition root imports it at run time
    from drivers.hardware import Hardware


# Per role: does the flow sensor belong to it, does the level move while it runs, may it run dry?
@dataclass(frozen=True)
class _RoleProfile:
    flow_sensor: bool  # the zone's flow sensor measures this pump
    level_change: bool  # the tank level must move while it runs
    dry_check: bool  # it must not run below the minimum water level


_ROLE_PROFILE: dict[str, _RoleProfile] = {
    "recirc": _RoleProfile(flow_sensor=True, level_change=False, dry_check=True),
    "drain": _RoleProfile(flow_sensor=False, level_change=True, dry_check=False),
    "fill": _RoleProfile(flow_sensor=False, level_change=True, dry_check=False),
    "irrigation": _RoleProfile(flow_sensor=False, level_change=False, dry_check=True),
}
_OTHER_ROLE = _RoleProfile(flow_sensor=False, level_change=False, dry_check=True)


def pump_id_of(node_uid: str | None, channel: str) -> str:
    """The physical pump's identity: ``relay:<name>`` for a gateway relay, ``node:<uid>/<channel>`` on a node."""
    return f"relay:{channel}" if node_uid is None else f"node:{node_uid}/{channel}"


@dataclass
class PumpChannel:
    """One pump: where it is wired, its limits, and the safety state between ticks.

    The relay object is here for the gate (``gateway/safety/gate.py``), the only module that switches it.
    """

    zone_id: int
    zone_uid: str
    role: str
    channel: str
    node_uid: str | None
    relay: Relay | None  # gateway-attached pumps
    monitor: CurrentMonitor | None  # the current monitor measuring this pump, if one does
    limits: ChannelLimits
    nominal_flow_l_min: float | None = None
    node_fail_safe: FailSafe = FailSafe.NO  # node pumps: from the zone's actuator config
    state: ChannelSafetyState = field(default_factory=ChannelSafetyState)
    desired_on: bool = False
    node_on: bool = False  # node pumps: what we last asked the node for
    run_until: float | None = None  # a timed run on a gateway relay ends here (monotonic)
    off_lease_until: float | None = None  # NC pumps: an explicit lease to stay OFF (monotonic)
    last_inputs: ChannelInputs | None = None
    current_a: float | None = None
    current_read_mono: float | None = None
    run_started_wall: float | None = None
    run_cmd_id: str | None = None  # the command that started the current run (water usage logs)
    flow_samples: list[tuple[float, float]] = field(default_factory=list)

    @property
    def key(self) -> tuple[int, str]:
        """(zone id, channel)."""
        return self.zone_id, self.channel

    @property
    def pump_id(self) -> str:
        """The physical pump (locks and failure counters belong to it, not to the zone)."""
        return pump_id_of(None if self.relay is not None else self.node_uid, self.channel)

    @property
    def relay_on(self) -> bool:
        """What we command (node pumps: what we last asked the node for)."""
        return bool(self.relay.pump_on) if self.relay is not None else self.node_on

    @property
    def fail_safe(self) -> FailSafe:
        """NC pumps run when the coil is de-energised."""
        if self.relay is not None:
            return FailSafe(self.relay.fail_safe_mode)
        return self.node_fail_safe


def limits_for(
    role: str,
    channel: str,
    fail_safe: FailSafe,
    has_current: bool,
    s: SafetySection,
    max_off_s: float | None = None,
    has_flow: bool | None = None,
) -> ChannelLimits:
    """Default limits of a channel from the safety settings and its role."""
    profile = _ROLE_PROFILE.get(role, _OTHER_ROLE)
    return ChannelLimits(
        overcurrent_a=s.overcurrent_a,
        idle_current_a=s.idle_current_a,
        min_flow_l_min=s.min_flow_l_min,
        no_flow_grace_s=s.no_flow_grace_s,
        stale_after_s=s.stale_after_s,
        min_water_level=s.min_water_level if profile.dry_check else None,
        level_change_min=s.level_change_min if profile.level_change else None,
        current_sensor=has_current,
        flow_sensor=profile.flow_sensor if has_flow is None else has_flow,
        level_sensor=True,
        channel=channel,
        fail_safe=fail_safe,
        max_off_s=(max_off_s if max_off_s is not None else s.max_nc_off_s) if fail_safe is FailSafe.NC else None,
    )


def build_channels(settings: Settings, zone_ids: dict[str, int], hardware: Hardware | None) -> list[PumpChannel]:
    """One PumpChannel per pump actuator of every zone (gateway relays and node channels)."""
    relays: Mapping[str, Relay] = hardware.relays if hardware is not None else {}
    monitors: dict[str, CurrentMonitor] = {}
    if hardware is not None:
        for cfg in hardware.config.ina209:
            if cfg.channel is not None:
                monitors[cfg.channel] = hardware.monitors[cfg.key]
    channels: list[PumpChannel] = []
    for zone in settings.zones:
        zone_id = zone_ids[zone.uid]
        max_off_s = _zone_max_off_s(zone.water_cycle)
        for role, ref in zone.actuators.items():
            if role not in _ROLE_PROFILE:
                continue  # dosers and lights are not pumps the safety loop supervises
            relay = relays.get(ref.channel) if ref.node_uid is None else None
            if relay is not None:
                fail_safe = FailSafe(relay.fail_safe_mode)
                monitor = monitors.get(ref.channel)
                has_current, has_flow = monitor is not None, None
            else:
                fail_safe = FailSafe(ref.fail_safe_mode)
                monitor = None
                # Node pumps: supervised from the node's channel telemetry where the node reports it.
                has_current, has_flow = "current" in ref.telemetry, "flow" in ref.telemetry
            ch = PumpChannel(
                zone_id=zone_id,
                zone_uid=zone.uid,
                role=role,
                channel=ref.channel,
                node_uid=ref.node_uid,
                relay=relay,
                monitor=monitor,
                limits=limits_for(role, ref.channel, fail_safe, has_current, settings.safety, max_off_s, has_flow),
                nominal_flow_l_min=ref.flow_l_min,
                node_fail_safe=fail_safe,
            )
            ch.node_on = relay is None and fail_safe is FailSafe.NC  # an NC node pump runs unless told otherwise
            ch.desired_on = ch.relay_on
            channels.append(ch)
    return channels


def _zone_max_off_s(water_cycle: WaterCycleConfig | None) -> float | None:
    """The zone's own NC OFF limit, only when its water_cycle sets one (else the safety default applies)."""
    minutes = None if water_cycle is None else water_cycle.recirc.max_recirc_off_minutes
    return None if minutes is None else minutes * 60.0
