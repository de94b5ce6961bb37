"""The retained config a node gets (contract ``config.json``), built from the zones' actuator wiring in Settings.

A node's channels are the actuators of any zone that name the node (``[zones.actuators.<role>] node_uid``):
their channel id, what kind of load the role drives, and the relay contact the node's coil switches it with.
Sensor channels are not configured here: a node reports the metrics its firmware has.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from drivers.relay_logic import relay_logic_for
from firmware_contracts.models import ChannelSpec, Intervals, NodeConfig
from gateway.settings import ZoneConfig

ChannelType = Literal["pump", "light", "doser"]

# What each actuator role (settings.ACTUATOR_ROLES) drives, in the contract's channel types.
ROLE_CHANNEL_TYPE: dict[str, ChannelType] = {
    "recirc": "pump",
    "drain": "pump",
    "fill": "pump",
    "irrigation": "pump",
    "light": "light",
    "ph_down": "doser",
    "ph_up": "doser",
    "nutrient_a": "doser",
    "nutrient_b": "doser",
}

CONFIG_VERSION = 1


def node_channels(zones: Iterable[ZoneConfig]) -> dict[str, tuple[ChannelSpec, ...]]:
    """node uid → the channels the zones' actuators give it, in config order."""
    out: dict[str, list[ChannelSpec]] = {}
    for zone in zones:
        for role, ref in zone.actuators.items():
            if ref.node_uid is None:
                continue  # a gateway relay: the gateway drives it, no node is told
            out.setdefault(ref.node_uid, []).append(
                ChannelSpec(
                    id=ref.channel,
                    type=ROLE_CHANNEL_TYPE[role],
                    fail_safe_mode=ref.fail_safe_mode,
                    relay_logic=relay_logic_for(ref.fail_safe_mode),
                )
            )
    return {uid: tuple(channels) for uid, channels in out.items()}


def node_config(node_uid: str, zone_uid: str, greenhouse_uid: str, channels: tuple[ChannelSpec, ...],
                telemetry_s: float, heartbeat_s: float) -> NodeConfig:
    """The config model published (retained) on the node's config topic."""
    return NodeConfig(
        node_uid=node_uid,
        zone_uid=zone_uid,
        gh_uid=greenhouse_uid,
        version=CONFIG_VERSION,
        channels=channels,
        intervals=Intervals(telemetry_s=telemetry_s, heartbeat_s=heartbeat_s),
    )
