"""firmware_contracts package."""

from firmware_contracts.models import (
    ChannelSpec,
    Command,
    CommandResponse,
    CommandStatus,
    Heartbeat,
    Intervals,
    NodeConfig,
    NodeHello,
    NodeStatus,
    TelemetrySample,
    parse_telemetry,
)
from firmware_contracts.topics import ParsedTopic, TopicError, TopicKind, parse_topic
from firmware_contracts.validate import (
    FailureCode,
    MessageKind,
    ValidationFailure,
    check,
    decode_and_validate,
)

# ``validate`` (the function) is deliberately not re-exported: it would shadow the ``validate`` module.

__all__ = [
    "ChannelSpec",
    "Command",
    "CommandResponse",
    "CommandStatus",
    "FailureCode",
    "Heartbeat",
    "Intervals",
    "MessageKind",
    "NodeConfig",
    "NodeHello",
    "NodeStatus",
    "ParsedTopic",
    "TelemetrySample",
    "TopicError",
    "TopicKind",
    "ValidationFailure",
    "check",
    "decode_and_validate",
    "parse_telemetry",
    "parse_topic",
]
