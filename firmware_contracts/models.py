"""Typed, frozen views of schema-valid payloads (parse with ``from_payload``, emit with ``to_payload``).

``from_payload`` assumes the payload already passed ``validate``; it does not re-check it.
Timestamps become float unix seconds whichever form the node sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

from firmware_contracts.timestamps import to_unix_seconds

__all__ = [
    "ChannelSpec",
    "Command",
    "CommandResponse",
    "CommandStatus",
    "Heartbeat",
    "Intervals",
    "NodeConfig",
    "NodeHello",
    "NodeStatus",
    "TelemetrySample",
    "parse_telemetry",
    "telemetry_items",
]

Payload = Mapping[str, object]


# Narrowing of schema-valid fields: a mismatch here means the payload skipped validation (a bug), not bad input.
def _str(payload: Payload, key: str) -> str:
    value = payload[key]
    if not isinstance(value, str):
        raise TypeError(f"{key}: expected a string, got {type(value).__name__}")
    return value


def _opt_str(payload: Payload, key: str) -> str | None:
    return None if payload.get(key) is None else _str(payload, key)


def _number(payload: Payload, key: str) -> float | int:
    value = payload[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key}: expected a number, got {type(value).__name__}")
    return value


def _opt_number(payload: Payload, key: str) -> float | int | None:
    return None if payload.get(key) is None else _number(payload, key)


def _opt_int(payload: Payload, key: str) -> int | None:
    value = _opt_number(payload, key)
    return None if value is None else int(value)


def _object(value: object, key: str) -> Payload:
    if not isinstance(value, Mapping):
        raise TypeError(f"{key}: expected an object, got {type(value).__name__}")
    return cast(Payload, value)


def _array(payload: Payload, key: str) -> list[object]:
    value = payload.get(key, [])
    if not isinstance(value, list | tuple):
        raise TypeError(f"{key}: expected an array, got {type(value).__name__}")
    return list(value)


def _ts(payload: Payload, key: str = "ts") -> float | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError(f"{key}: expected a timestamp, got {type(value).__name__}")
    return to_unix_seconds(value)


def _drop_none(items: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in items.items() if value is not None}


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One channel of a node (NodeConfig.channels[] or node_hello.channels[])."""

    id: str
    type: str
    metric_type: str | None = None
    fail_safe_mode: str | None = None  # "NC" | "NO"
    controlled_by: str | None = None
    relay_logic: str | None = None  # "active_open" | "active_close"

    @classmethod
    def from_payload(cls, payload: Payload) -> ChannelSpec:
        """Build from a schema-valid channel object (unknown keys from hello are ignored)."""
        return cls(
            id=_str(payload, "id"),
            type=_str(payload, "type"),
            metric_type=_opt_str(payload, "metric_type"),
            fail_safe_mode=_opt_str(payload, "fail_safe_mode"),
            controlled_by=_opt_str(payload, "controlled_by"),
            relay_logic=_opt_str(payload, "relay_logic"),
        )

    def to_payload(self) -> dict[str, object]:
        """The JSON object for NodeConfig.channels[] (absent fields omitted)."""
        return _drop_none(
            {
                "id": self.id,
                "type": self.type,
                "metric_type": self.metric_type,
                "fail_safe_mode": self.fail_safe_mode,
                "controlled_by": self.controlled_by,
                "relay_logic": self.relay_logic,
            }
        )


@dataclass(frozen=True, slots=True)
class NodeHello:
    """A node announcing itself on ``hydro/node_hello``."""

    hardware_id: str
    node_type: str
    fw_version: str
    hardware_revision: str | None = None
    node_uid: str | None = None
    capabilities: tuple[str, ...] = ()
    channels: tuple[ChannelSpec, ...] = ()

    @classmethod
    def from_payload(cls, payload: Payload) -> NodeHello:
        """Build from a schema-valid node_hello payload."""
        return cls(
            hardware_id=_str(payload, "hardware_id"),
            node_type=_str(payload, "node_type"),
            fw_version=_str(payload, "fw_version"),
            hardware_revision=_opt_str(payload, "hardware_revision"),
            node_uid=_opt_str(payload, "node_uid"),
            capabilities=tuple(str(c) for c in _array(payload, "capabilities")),
            channels=tuple(ChannelSpec.from_payload(_object(c, "channels[]")) for c in _array(payload, "channels")),
        )


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Node health sent every ``intervals.heartbeat_s``."""

    uptime_s: int
    rssi: int  # dBm, -127..0
    free_heap: int  # bytes
    ts: float | None = None
    wifi_reconnects: int | None = None

    @classmethod
    def from_payload(cls, payload: Payload) -> Heartbeat:
        """Build from a schema-valid heartbeat payload."""
        return cls(
            uptime_s=int(_number(payload, "uptime_s")),
            rssi=int(_number(payload, "rssi")),
            free_heap=int(_number(payload, "free_heap")),
            ts=_ts(payload),
            wifi_reconnects=_opt_int(payload, "wifi_reconnects"),
        )


@dataclass(frozen=True, slots=True)
class TelemetrySample:
    """One measurement. ``ts`` is None when the node has no synced clock (stamp with arrival time)."""

    metric_type: str
    value: float
    ts: float | None
    channel: str | None = None
    raw: object = None
    node_uid: str | None = None  # REST ingest only; over MQTT the topic names the node
    zone_uid: str | None = None

    @classmethod
    def from_payload(cls, payload: Payload) -> TelemetrySample:
        """Build from one schema-valid sample object."""
        return cls(
            metric_type=_str(payload, "metric_type"),
            value=float(_number(payload, "value")),
            ts=_ts(payload),
            channel=_opt_str(payload, "channel"),
            raw=payload.get("raw"),
            node_uid=_opt_str(payload, "node_uid"),
            zone_uid=_opt_str(payload, "zone_uid"),
        )


def telemetry_items(payload: object) -> list[Any]:
    """The sample objects of a schema-valid telemetry payload: a sample, a list of them, or ``{"samples": [...]}``."""
    if isinstance(payload, list):
        return payload
    if isinstance(payload, Mapping) and "samples" in payload:
        return list(payload["samples"])
    if isinstance(payload, Mapping):
        return [payload]
    raise TypeError(f"telemetry payload must be an object or a list, not {type(payload).__name__}")


def parse_telemetry(payload: object) -> list[TelemetrySample]:
    """Samples of a schema-valid telemetry payload: a sample, a list of them, or ``{"samples": [...]}``."""
    return [TelemetrySample.from_payload(_object(item, "sample")) for item in telemetry_items(payload)]


@dataclass(frozen=True, slots=True)
class Command:
    """A command the gateway sends on ``…/{channel}/command``."""

    cmd: str
    cmd_id: str
    params: Mapping[str, object] = field(default_factory=dict)
    ts: float | None = None
    deadline_s: float | None = None

    @classmethod
    def from_payload(cls, payload: Payload) -> Command:
        """Build from a schema-valid command payload."""
        return cls(
            cmd=_str(payload, "cmd"),
            cmd_id=_str(payload, "cmd_id"),
            params=dict(_object(payload["params"], "params")),
            ts=_ts(payload),
            deadline_s=None if (deadline := _opt_number(payload, "deadline_s")) is None else float(deadline),
        )

    def to_payload(self) -> dict[str, object]:
        """The JSON object to publish (``ts`` as unix seconds; absent fields omitted)."""
        return _drop_none(
            {
                "cmd": self.cmd,
                "cmd_id": self.cmd_id,
                "params": dict(self.params),
                "ts": self.ts,
                "deadline_s": self.deadline_s,
            }
        )


class CommandStatus(StrEnum):
    """What a node reports about a command."""

    ACK = "ACK"
    DONE = "DONE"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class CommandResponse:
    """A node's answer on ``…/{channel}/command_response``."""

    cmd: str
    cmd_id: str
    status: CommandStatus
    error_code: str | None = None
    details: Mapping[str, object] = field(default_factory=dict)
    ts: float | None = None

    @classmethod
    def from_payload(cls, payload: Payload) -> CommandResponse:
        """Build from a schema-valid command_response payload."""
        return cls(
            cmd=_str(payload, "cmd"),
            cmd_id=_str(payload, "cmd_id"),
            status=CommandStatus(_str(payload, "status")),
            error_code=_opt_str(payload, "error_code"),
            details=dict(_object(payload.get("details", {}), "details")),
            ts=_ts(payload),
        )


@dataclass(frozen=True, slots=True)
class Intervals:
    """How often a node reports, in seconds."""

    telemetry_s: float
    heartbeat_s: float


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The retained config the gateway publishes on ``…/{node}/config``."""

    node_uid: str
    zone_uid: str
    gh_uid: str
    version: int
    channels: tuple[ChannelSpec, ...]
    intervals: Intervals

    @classmethod
    def from_payload(cls, payload: Payload) -> NodeConfig:
        """Build from a schema-valid config payload."""
        intervals = _object(payload["intervals"], "intervals")
        return cls(
            node_uid=_str(payload, "node_uid"),
            zone_uid=_str(payload, "zone_uid"),
            gh_uid=_str(payload, "gh_uid"),
            version=int(_number(payload, "version")),
            channels=tuple(ChannelSpec.from_payload(_object(c, "channels[]")) for c in _array(payload, "channels")),
            intervals=Intervals(float(_number(intervals, "telemetry_s")), float(_number(intervals, "heartbeat_s"))),
        )

    def to_payload(self) -> dict[str, object]:
        """The JSON object to publish (retained, QoS 1)."""
        return {
            "node_uid": self.node_uid,
            "zone_uid": self.zone_uid,
            "gh_uid": self.gh_uid,
            "version": self.version,
            "channels": [channel.to_payload() for channel in self.channels],
            "intervals": {
                "telemetry_s": self.intervals.telemetry_s,
                "heartbeat_s": self.intervals.heartbeat_s,
            },
        }


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """Online/offline from ``…/{node}/status`` (the node's last will says offline)."""

    online: bool
    ts: float | None = None

    @classmethod
    def from_payload(cls, payload: Payload) -> NodeStatus:
        """Build from a schema-valid status payload."""
        return cls(online=payload["status"] == "online", ts=_ts(payload))
