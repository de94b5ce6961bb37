"""Topic parser, builders and the per-node ACL helpers."""

from __future__ import annotations

import pytest

from firmware_contracts.topics import (
    COMMAND_RESPONSE_FILTER,
    GATEWAY_INBOUND_FILTERS,
    HEARTBEAT_FILTER,
    NODE_HELLO_TOPIC,
    STATUS_FILTER,
    TELEMETRY_FILTER,
    ParsedTopic,
    TopicError,
    TopicKind,
    build_topic,
    command_response_topic,
    command_topic,
    config_topic,
    heartbeat_topic,
    is_gateway_only,
    may_publish,
    may_subscribe,
    node_subtree_filter,
    parse_topic,
    status_topic,
    telemetry_topic,
)

GH, ZONE, NODE, CH = "gh-1", "zn_A", "nd-pump-01", "pump_recirc"


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        (heartbeat_topic(GH, ZONE, NODE), ParsedTopic(TopicKind.HEARTBEAT, GH, ZONE, NODE)),
        (telemetry_topic(GH, ZONE, NODE), ParsedTopic(TopicKind.TELEMETRY, GH, ZONE, NODE)),
        (status_topic(GH, ZONE, NODE), ParsedTopic(TopicKind.LWT, GH, ZONE, NODE)),
        (config_topic(GH, ZONE, NODE), ParsedTopic(TopicKind.CONFIG, GH, ZONE, NODE)),
        (command_topic(GH, ZONE, NODE, CH), ParsedTopic(TopicKind.COMMAND, GH, ZONE, NODE, CH)),
        (
            command_response_topic(GH, ZONE, NODE, CH),
            ParsedTopic(TopicKind.COMMAND_RESPONSE, GH, ZONE, NODE, CH),
        ),
        (NODE_HELLO_TOPIC, ParsedTopic(TopicKind.NODE_HELLO)),
    ],
)
def test_builders_round_trip_through_parser(topic: str, expected: ParsedTopic) -> None:
    assert parse_topic(topic) == expected
    assert build_topic(expected) == topic


def test_topic_strings_match_spec_table() -> None:
    assert heartbeat_topic("g", "z", "n") == "hydro/g/z/n/heartbeat"
    assert telemetry_topic("g", "z", "n") == "hydro/g/z/n/telemetry"
    assert command_topic("g", "z", "n", "c") == "hydro/g/z/n/c/command"
    assert command_response_topic("g", "z", "n", "c") == "hydro/g/z/n/c/command_response"
    assert config_topic("g", "z", "n") == "hydro/g/z/n/config"
    assert status_topic("g", "z", "n") == "hydro/g/z/n/status"
    assert NODE_HELLO_TOPIC == "hydro/node_hello"
    assert TELEMETRY_FILTER == "hydro/+/+/+/telemetry"
    assert set(GATEWAY_INBOUND_FILTERS) == {
        NODE_HELLO_TOPIC,
        HEARTBEAT_FILTER,
        TELEMETRY_FILTER,
        STATUS_FILTER,
        COMMAND_RESPONSE_FILTER,
    }


def test_uids_that_look_like_suffixes_are_still_positional() -> None:
    # A node called "config" sending telemetry is telemetry, not config.
    assert parse_topic("hydro/telemetry/status/config/telemetry") == ParsedTopic(
        TopicKind.TELEMETRY, "telemetry", "status", "config"
    )
    assert parse_topic("hydro/g/z/n/command/command_response").channel == "command"


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "hydro",
        "hydro/",
        "/hydro/g/z/n/telemetry",
        "hydro/g/z/n/telemetry/",
        "HYDRO/g/z/n/telemetry",
        "greenhouse/g/z/n/telemetry",
        "hydro/g/z/n",
        "hydro/g/z/n/unknown",
        "hydro/g/z/n/c/telemetry",  # node-level kind at channel depth
        "hydro/g/z/n/command",  # channel-level kind without a channel
        "hydro/g/z/n/c/command/extra",
        "hydro/+/z/n/telemetry",
        "hydro/g/#",
        "hydro/g/z/+/telemetry",
        "hydro/g/z/n+/telemetry",
        "hydro/g//n/telemetry",
        "hydro/g/z/n\n/telemetry",
        "hydro/g/z/n/telemetry\n",
        "hydro/g/z/n\x00/telemetry",
        "hydro/g/z/nöde/telemetry",
        "hydro/g/z/n d/telemetry",
        "hydro/g/z/" + "n" * 65 + "/telemetry",
        "hydro/node_hello/x",
        "hydro/g/z/n/" + "x" * 10_000,
    ],
)
def test_malformed_topics_raise_topic_error(topic: str) -> None:
    with pytest.raises(TopicError) as info:
        parse_topic(topic)
    assert info.value.reason


def test_topic_error_names_the_bad_segment() -> None:
    with pytest.raises(TopicError, match="node 'n d'"):
        parse_topic("hydro/g/z/n d/telemetry")


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "x" * 65, "a b", "é"])
def test_builders_refuse_uids_that_would_change_the_topic(bad: str) -> None:
    with pytest.raises(TopicError):
        telemetry_topic(GH, ZONE, bad)
    with pytest.raises(TopicError):
        command_topic(GH, ZONE, NODE, bad)
    with pytest.raises(TopicError):
        config_topic(bad, ZONE, NODE)


def test_node_subtree_filter() -> None:
    assert node_subtree_filter(NODE) == f"hydro/+/+/{NODE}/#"
    assert node_subtree_filter(NODE, gh=GH, zone=ZONE) == f"hydro/{GH}/{ZONE}/{NODE}/#"
    with pytest.raises(TopicError):
        node_subtree_filter("+")


# --- ACL -----------------------------------------------------------------------------------------------


OTHER = "nd-ph-02"


@pytest.mark.parametrize(
    "topic",
    [
        NODE_HELLO_TOPIC,
        heartbeat_topic(GH, ZONE, NODE),
        telemetry_topic(GH, ZONE, NODE),
        status_topic(GH, ZONE, NODE),
        command_response_topic(GH, ZONE, NODE, CH),
        telemetry_topic("unassigned", "unassigned", NODE),
    ],
)
def test_node_may_publish_its_own_uplink_topics(topic: str) -> None:
    assert may_publish(NODE, topic)


@pytest.mark.parametrize(
    "topic",
    [
        # another node's topics, every kind
        heartbeat_topic(GH, ZONE, OTHER),
        telemetry_topic(GH, ZONE, OTHER),
        status_topic(GH, ZONE, OTHER),
        command_response_topic(GH, ZONE, OTHER, CH),
        # gateway → node topics, even its own
        config_topic(GH, ZONE, NODE),
        command_topic(GH, ZONE, NODE, CH),
        config_topic(GH, ZONE, OTHER),
        command_topic(GH, ZONE, OTHER, CH),
        # prefix / suffix / case tricks
        telemetry_topic(GH, ZONE, NODE + "0"),
        telemetry_topic(GH, ZONE, NODE[:-1]),
        telemetry_topic(GH, ZONE, NODE.upper()),
        f"hydro/{GH}/{ZONE}/{NODE}/telemetry/x",
        f"hydro/{GH}/{ZONE}/{NODE}/telemetry\n",
        f"hydro/{GH}/{NODE}/telemetry",
        f"hydro/{GH}/{ZONE}/{OTHER}/{NODE}/command_response",
        # wildcards are never publishable
        f"hydro/+/+/{NODE}/telemetry",
        f"hydro/{GH}/{ZONE}/{NODE}/#",
        "hydro/#",
        "#",
        # outside the tree
        "$SYS/broker/clients",
        f"other/{GH}/{ZONE}/{NODE}/telemetry",
        "",
    ],
)
def test_node_may_not_publish_elsewhere(topic: str) -> None:
    assert not may_publish(NODE, topic)


def test_publish_pinned_to_known_assignment() -> None:
    assert may_publish(NODE, telemetry_topic(GH, ZONE, NODE), gh=GH, zone=ZONE)
    assert not may_publish(NODE, telemetry_topic(GH, "zn-other", NODE), gh=GH, zone=ZONE)
    assert not may_publish(NODE, telemetry_topic("gh-2", ZONE, NODE), gh=GH)


@pytest.mark.parametrize("identity", ["", "+", "#", "a/b", "nd-1\n"])
def test_invalid_identities_get_no_subtree(identity: str) -> None:
    assert not may_publish(identity, f"hydro/{GH}/{ZONE}/{identity}/telemetry")
    assert not may_publish(identity, f"hydro/{GH}/{ZONE}/+/telemetry")
    assert not may_subscribe(identity, f"hydro/{GH}/{ZONE}/{identity}/config")
    assert not may_subscribe(identity, "hydro/+/+/+/config")


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        (command_topic(GH, ZONE, NODE, CH), True),
        (config_topic(GH, ZONE, NODE), True),
        # Not uids, but a node's hydro/+/+/{uid}/+/command filter would match them: still the gateway's.
        (f"hydro/g h/{ZONE}/{NODE}/{CH}/command", True),
        (f"hydro///{NODE}//command", True),
        (f"hydro/{GH}/{ZONE}/{'n' * 70}/config", True),
        (command_response_topic(GH, ZONE, NODE, CH), False),
        (telemetry_topic(GH, ZONE, NODE), False),
        (status_topic(GH, ZONE, NODE), False),
        (NODE_HELLO_TOPIC, False),
        (f"hydro/{GH}/{ZONE}/{NODE}/{CH}/x/command", False),
        (f"lab/{GH}/{ZONE}/{NODE}/config", False),
        ("", False),
    ],
)
def test_command_and_config_topics_are_the_gateways_only(topic: str, expected: bool) -> None:
    assert is_gateway_only(topic) is expected


def test_hello_is_open_to_any_authenticated_identity() -> None:
    # A board that logs in with its hardware id (colons and all) must still be able to say hello.
    assert may_publish("esp32-24:6F:28:AA:01:02", NODE_HELLO_TOPIC)
    assert not may_publish("", NODE_HELLO_TOPIC)


@pytest.mark.parametrize(
    "topic_filter",
    [
        config_topic(GH, ZONE, NODE),
        f"hydro/+/+/{NODE}/config",
        f"hydro/{GH}/+/{NODE}/config",
        f"hydro/+/{ZONE}/{NODE}/config",
        command_topic(GH, ZONE, NODE, CH),
        f"hydro/{GH}/{ZONE}/{NODE}/+/command",
        f"hydro/+/+/{NODE}/+/command",
        f"hydro/+/+/{NODE}/{CH}/command",
    ],
)
def test_node_may_subscribe_to_own_config_and_commands(topic_filter: str) -> None:
    assert may_subscribe(NODE, topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    [
        # other nodes, directly or through wildcards in the node position
        config_topic(GH, ZONE, OTHER),
        command_topic(GH, ZONE, OTHER, CH),
        f"hydro/+/+/{OTHER}/+/command",
        "hydro/+/+/+/config",
        f"hydro/{GH}/{ZONE}/+/config",
        "hydro/+/+/+/+/command",
        f"hydro/{GH}/{ZONE}/+/{CH}/command",
        # multi-level wildcards anywhere
        "#",
        "hydro/#",
        f"hydro/{GH}/#",
        f"hydro/+/+/{NODE}/#",
        f"hydro/{GH}/{ZONE}/{NODE}/#",
        f"hydro/{GH}/{ZONE}/{NODE}/+/#",
        # wildcard in the kind position, or partial wildcards
        f"hydro/{GH}/{ZONE}/{NODE}/+",
        f"hydro/{GH}/{ZONE}/{NODE}/+/+",
        f"hydro/{GH}/{ZONE}/{NODE}+/config",
        f"hydro/{GH}+/{ZONE}/{NODE}/config",
        f"hydro/{GH}/{ZONE}/{NODE}/{CH}+/command",
        # other kinds of its own subtree (uplink topics, other nodes' responses)
        telemetry_topic(GH, ZONE, NODE),
        status_topic(GH, ZONE, NODE),
        command_response_topic(GH, ZONE, NODE, CH),
        f"hydro/+/+/{NODE}/+/command_response",
        NODE_HELLO_TOPIC,
        # shared subscriptions, $SYS, other roots, malformed
        f"$share/grp/hydro/+/+/{NODE}/config",
        "$SYS/#",
        f"/hydro/{GH}/{ZONE}/{NODE}/config",
        f"hydro/{GH}/{ZONE}/{NODE}/config/",
        f"hydro/{GH}//{NODE}/config",
        f"hydro/{GH}/{ZONE}/{NODE}/config\n",
        f"hydro/{GH}/{ZONE}/{NODE.upper()}/config",
        f"hydro/{GH}/{ZONE}/{NODE}x/config",
        f"hydro/{GH}/{ZONE}/x/{NODE}/config",
        "",
    ],
)
def test_node_may_not_subscribe_to_anything_else(topic_filter: str) -> None:
    assert not may_subscribe(NODE, topic_filter)


def test_subscribe_pinned_assignment_refuses_plus_and_other_zones() -> None:
    assert may_subscribe(NODE, config_topic(GH, ZONE, NODE), gh=GH, zone=ZONE)
    assert not may_subscribe(NODE, f"hydro/+/+/{NODE}/config", gh=GH, zone=ZONE)
    assert not may_subscribe(NODE, config_topic(GH, "zn-other", NODE), gh=GH, zone=ZONE)
    assert may_subscribe(NODE, f"hydro/{GH}/+/{NODE}/+/command", gh=GH)
