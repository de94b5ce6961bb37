"""MQTT topic templates of SPEC §1, a strict parser, builders and the per-node ACL rules.

Topic shapes (every ``{…}`` is a uid matching ``[A-Za-z0-9_-]{1,64}``)::

    hydro/node_hello                                      node → gw
    hydro/{gh}/{zone}/{node}/heartbeat                    node → gw
    hydro/{gh}/{zone}/{node}/telemetry                    node → gw
    hydro/{gh}/{zone}/{node}/status                       node → gw (LWT, retained)
    hydro/{gh}/{zone}/{node}/{channel}/command            gw → node
    hydro/{gh}/{zone}/{node}/{channel}/command_response   node → gw
    hydro/{gh}/{zone}/{node}/config                       gw → node (retained)

ACL decision (``may_publish`` / ``may_subscribe``): a node is identified by its node_uid only, because a
node that is not yet assigned to a zone does not know its gh/zone. Node uids are unique on a gateway's
broker (the registry generates them), so "node position == own uid" is what keeps nodes apart.
A node may subscribe to its own config and command topics, with ``+`` allowed only in the gh and zone
positions (and ``+`` in the channel position of the command filter); ``#``, ``+`` anywhere else,
``$``-prefixed filters (``$SYS``, ``$share``) and partial wildcards are refused.

Command and config topics are the gateway's alone (``is_gateway_only``): no MQTT client publishes there,
whatever its role, so every command a node receives went through the gateway's checks and its
``commands`` table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "COMMAND_FILTER",
    "COMMAND_RESPONSE_FILTER",
    "CONFIG_FILTER",
    "GATEWAY_INBOUND_FILTERS",
    "GATEWAY_ONLY_KINDS",
    "HEARTBEAT_FILTER",
    "NODE_HELLO_TOPIC",
    "STATUS_FILTER",
    "TELEMETRY_FILTER",
    "UID_PATTERN",
    "ParsedTopic",
    "TopicError",
    "TopicKind",
    "build_topic",
    "command_response_topic",
    "command_topic",
    "config_topic",
    "heartbeat_topic",
    "is_gateway_only",
    "is_valid_uid",
    "may_publish",
    "may_subscribe",
    "node_subtree_filter",
    "parse_topic",
    "status_topic",
    "telemetry_topic",
]

ROOT = "hydro"
UID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
_UID_RE = re.compile(UID_PATTERN)
# Longest legal topic is 6 uids + "hydro" + the longest suffix; anything longer is garbage, parse no further.
_MAX_TOPIC_LEN = 6 * 65 + len("command_response")


class TopicKind(Enum):
    """What a topic carries; decided by the topic's shape alone."""

    NODE_HELLO = "node_hello"
    HEARTBEAT = "heartbeat"
    TELEMETRY = "telemetry"
    COMMAND = "command"
    COMMAND_RESPONSE = "command_response"
    CONFIG = "config"
    LWT = "status"


# Suffix → kind, split by topic depth: node-level topics have 5 segments, channel-level ones 6.
_NODE_SUFFIXES: dict[str, TopicKind] = {
    "heartbeat": TopicKind.HEARTBEAT,
    "telemetry": TopicKind.TELEMETRY,
    "config": TopicKind.CONFIG,
    "status": TopicKind.LWT,
}
_CHANNEL_SUFFIXES: dict[str, TopicKind] = {
    "command": TopicKind.COMMAND,
    "command_response": TopicKind.COMMAND_RESPONSE,
}
_NODE_PUBLISHES = frozenset(
    {TopicKind.HEARTBEAT, TopicKind.TELEMETRY, TopicKind.COMMAND_RESPONSE, TopicKind.LWT}
)
# gw → node topics: only the gateway itself publishes on them (never an MQTT client connection).
GATEWAY_ONLY_KINDS = frozenset({TopicKind.COMMAND, TopicKind.CONFIG})

NODE_HELLO_TOPIC = f"{ROOT}/node_hello"
HEARTBEAT_FILTER = f"{ROOT}/+/+/+/heartbeat"
TELEMETRY_FILTER = f"{ROOT}/+/+/+/telemetry"
STATUS_FILTER = f"{ROOT}/+/+/+/status"
COMMAND_RESPONSE_FILTER = f"{ROOT}/+/+/+/+/command_response"
COMMAND_FILTER = f"{ROOT}/+/+/+/+/command"
CONFIG_FILTER = f"{ROOT}/+/+/+/config"
# Everything the gateway itself subscribes to (node → gw traffic).
GATEWAY_INBOUND_FILTERS: tuple[str, ...] = (
    NODE_HELLO_TOPIC,
    HEARTBEAT_FILTER,
    TELEMETRY_FILTER,
    STATUS_FILTER,
    COMMAND_RESPONSE_FILTER,
)


class TopicError(ValueError):
    """A topic (or a uid meant for one) does not have a contract shape."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic split into its kind and uids; fields a kind does not have are None."""

    kind: TopicKind
    gh: str | None = None
    zone: str | None = None
    node: str | None = None
    channel: str | None = None


def is_valid_uid(value: str) -> bool:
    """True if ``value`` can be a gh/zone/node/channel segment."""
    return _UID_RE.fullmatch(value) is not None


def _check_uid(name: str, value: object) -> None:
    if not isinstance(value, str) or not is_valid_uid(value):
        raise TopicError(f"{name} {value!r} is not a uid ([A-Za-z0-9_-]{{1,64}})")


def parse_topic(topic: str) -> ParsedTopic:
    """Parse a concrete (wildcard-free) topic or raise ``TopicError`` saying why it is not one."""
    if not isinstance(topic, str):
        raise TopicError(f"topic must be str, not {type(topic).__name__}")
    if len(topic) > _MAX_TOPIC_LEN:
        raise TopicError("topic too long")
    if topic == NODE_HELLO_TOPIC:
        return ParsedTopic(TopicKind.NODE_HELLO)
    parts = topic.split("/")
    if parts[0] != ROOT:
        raise TopicError(f"topic must start with {ROOT!r}/")
    if len(parts) == 5:
        kind = _NODE_SUFFIXES.get(parts[4])
        channel = None
    elif len(parts) == 6:
        kind = _CHANNEL_SUFFIXES.get(parts[5])
        channel = parts[4]
    else:
        raise TopicError(f"unexpected number of segments ({len(parts)})")
    if kind is None:
        raise TopicError(f"unknown topic suffix {parts[-1]!r} for {len(parts)} segments")
    _check_uid("gh", parts[1])
    _check_uid("zone", parts[2])
    _check_uid("node", parts[3])
    if channel is not None:
        _check_uid("channel", channel)
    return ParsedTopic(kind, parts[1], parts[2], parts[3], channel)


def build_topic(parsed: ParsedTopic) -> str:
    """Inverse of ``parse_topic``; validates every uid."""
    if parsed.kind is TopicKind.NODE_HELLO:
        return NODE_HELLO_TOPIC
    for name in ("gh", "zone", "node"):
        _check_uid(name, getattr(parsed, name))
    base = f"{ROOT}/{parsed.gh}/{parsed.zone}/{parsed.node}"
    if parsed.kind in (TopicKind.COMMAND, TopicKind.COMMAND_RESPONSE):
        _check_uid("channel", parsed.channel)
        return f"{base}/{parsed.channel}/{parsed.kind.value}"
    if parsed.channel is not None:
        raise TopicError(f"{parsed.kind.name} topics have no channel")
    return f"{base}/{parsed.kind.value}"


def heartbeat_topic(gh: str, zone: str, node: str) -> str:
    """``hydro/{gh}/{zone}/{node}/heartbeat``."""
    return build_topic(ParsedTopic(TopicKind.HEARTBEAT, gh, zone, node))


def telemetry_topic(gh: str, zone: str, node: str) -> str:
    """``hydro/{gh}/{zone}/{node}/telemetry``."""
    return build_topic(ParsedTopic(TopicKind.TELEMETRY, gh, zone, node))


def status_topic(gh: str, zone: str, node: str) -> str:
    """``hydro/{gh}/{zone}/{node}/status`` (last will: ``{"status": "offline"}``, retained)."""
    return build_topic(ParsedTopic(TopicKind.LWT, gh, zone, node))


def config_topic(gh: str, zone: str, node: str) -> str:
    """``hydro/{gh}/{zone}/{node}/config`` (NodeConfig, retained)."""
    return build_topic(ParsedTopic(TopicKind.CONFIG, gh, zone, node))


def command_topic(gh: str, zone: str, node: str, channel: str) -> str:
    """``hydro/{gh}/{zone}/{node}/{channel}/command``."""
    return build_topic(ParsedTopic(TopicKind.COMMAND, gh, zone, node, channel))


def command_response_topic(gh: str, zone: str, node: str, channel: str) -> str:
    """``hydro/{gh}/{zone}/{node}/{channel}/command_response``."""
    return build_topic(ParsedTopic(TopicKind.COMMAND_RESPONSE, gh, zone, node, channel))


def node_subtree_filter(node_uid: str, gh: str = "+", zone: str = "+") -> str:
    """The filter covering everything under one node: ``hydro/+/+/{node_uid}/#`` (gh/zone pinnable)."""
    _check_uid("node", node_uid)
    for name, value in (("gh", gh), ("zone", zone)):
        if value != "+":
            _check_uid(name, value)
    return f"{ROOT}/{gh}/{zone}/{node_uid}/#"


def may_publish(node_uid: str, topic: str, *, gh: str | None = None, zone: str | None = None) -> bool:
    """May node ``node_uid`` publish to ``topic``? Own heartbeat/telemetry/command_response/status, or hello.

    ``gh``/``zone``, when the gateway knows the node's assignment, must match too.
    """
    try:
        parsed = parse_topic(topic)
    except TopicError:
        return False  # includes every topic with + or # in it: publishing to wildcards is never allowed
    if parsed.kind is TopicKind.NODE_HELLO:
        # Any authenticated identity may say hello, even one that is a hardware id rather than a uid.
        return isinstance(node_uid, str) and node_uid != ""
    if not is_valid_uid(node_uid) or parsed.kind not in _NODE_PUBLISHES or parsed.node != node_uid:
        return False
    return (gh is None or parsed.gh == gh) and (zone is None or parsed.zone == zone)


def is_gateway_only(topic: str) -> bool:
    """True for command and config topics, which only the gateway publishes (no client, whatever its role).

    Also true for a topic of that shape whose segments are not valid uids (``hydro/g h/z/n/c/command``):
    ``parse_topic`` rejects it, but a node's ``hydro/+/+/{uid}/+/command`` filter would still match it.
    """
    try:
        return parse_topic(topic).kind in GATEWAY_ONLY_KINDS
    except TopicError:
        if not isinstance(topic, str):
            return False
        parts = topic.split("/")
        return parts[0] == ROOT and ((len(parts) == 5 and parts[4] == TopicKind.CONFIG.value)
                                     or (len(parts) == 6 and parts[5] == TopicKind.COMMAND.value))


def _segment_ok(segment: str, allow_plus: bool, pinned: str | None) -> bool:
    if segment == "+":
        return allow_plus and pinned is None
    return is_valid_uid(segment) and (pinned is None or segment == pinned)


def may_subscribe(
    node_uid: str, topic_filter: str, *, gh: str | None = None, zone: str | None = None
) -> bool:
    """May node ``node_uid`` subscribe to ``topic_filter``? Only its own config and command topics.

    Accepted: ``hydro/G/Z/{node_uid}/config``, ``hydro/G/Z/{node_uid}/+/command`` and
    ``hydro/G/Z/{node_uid}/{channel}/command`` where G and Z are uids or ``+`` (``+`` is refused for a
    position the gateway pins through ``gh``/``zone``). Anything else — ``#``, ``+`` in the node
    position, other nodes, ``$SYS``/``$share``, other kinds — is refused.
    """
    if not is_valid_uid(node_uid) or not isinstance(topic_filter, str) or len(topic_filter) > _MAX_TOPIC_LEN:
        return False
    parts = topic_filter.split("/")
    if parts[0] != ROOT or parts[-1] not in ("config", "command"):
        return False
    if not (_segment_ok(parts[1], True, gh) and _segment_ok(parts[2], True, zone)):
        return False
    if len(parts) == 5 and parts[4] == "config":
        return parts[3] == node_uid
    if len(parts) == 6 and parts[5] == "command":
        return parts[3] == node_uid and _segment_ok(parts[4], True, None)
    return False
