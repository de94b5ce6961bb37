"""MQTT 3.1.1 details nodes rely on (issue 14), with real clients: a QoS 1 PUBLISH the broker drops is still
acknowledged, wildcard filters never match $-topics, overlapping subscriptions respect the highest QoS."""

from __future__ import annotations

import struct

from conftest import PASSWORD, accounts

from tests.conftest import eventually
from tests.fakes.mqtt_clients import PahoClient, RawClient, publish_packet

PUBACK, PUBREC, PINGRESP = 4, 5, 13


async def test_a_qos1_publish_the_broker_will_not_route_is_still_acknowledged(broker_factory):
    broker, sink = await broker_factory(anonymous=False, users=accounts("nd-ph-1"))
    # A node's paho client: each returns only once its PUBACK arrived (nothing left in flight).
    node = PahoClient("nd-ph-1", broker.port, username="nd-ph-1", password=PASSWORD)
    await node.connect()
    for topic in ("$SYS/broker/uptime", "hydro/gh1/zone-a/nd-ph-2/telemetry", "hydro/gh1/zone-a/nd-ph-1/pump/command"):
        await node.publish(topic, b"{}", qos=1)
    await node.publish("hydro/gh1/zone-a/nd-ph-1/telemetry", b"{}", qos=1)
    await eventually(lambda: sink.messages)
    assert [m.topic for m in sink.messages] == ["hydro/gh1/zone-a/nd-ph-1/telemetry"]
    await node.disconnect()

    # At the byte level: the PUBACK carries the packet id, QoS 2 gets its PUBREC, the connection stays up.
    raw = RawClient(broker.port)
    assert await raw.connect("nd-ph-1", username="nd-ph-1", password=PASSWORD) == (0, False)
    raw.send(publish_packet("$SYS/x", b"1", qos=1, pid=41))
    raw.send(publish_packet("hydro/gh1/zone-a/nd-ph-2/telemetry", b"2", qos=1, pid=42))
    raw.send(publish_packet("$share/g/hydro/x", b"3", qos=2, pid=43))
    raw.send(b"\xc0\x00")  # PINGREQ
    answers = [await raw.read_packet() for _ in range(4)]
    assert [(kind, struct.unpack("!H", body)[0] if body else None) for kind, _, body in answers] == \
        [(PUBACK, 41), (PUBACK, 42), (PUBREC, 43), (PINGRESP, None)]
    assert [m.topic for m in sink.messages] == ["hydro/gh1/zone-a/nd-ph-1/telemetry"]
    refusals = broker.broker.refusals
    assert (refusals["dollar_topic"], refusals["acl_publish"], refusals["acl_gateway_topic"]) == (3, 2, 1)
    assert refusals["invalid_topic"] == 0  # a $-topic is dropped, not a reason to close the connection
    raw.close()


async def test_wildcard_filters_never_match_dollar_topics(broker_factory):
    broker, _ = await broker_factory()  # demo: anonymous clients may subscribe to anything
    wide = PahoClient("wide", broker.port)
    await wide.connect()
    for topic_filter in ("#", "+/broker/uptime", "+/#"):
        assert await wide.subscribe(topic_filter) == [1]
    system = PahoClient("system", broker.port)
    await system.connect()
    assert await system.subscribe("$SYS/#") == [1]

    await broker.publish("$SYS/broker/uptime", b"42", qos=1, retain=True)  # a server topic, from the broker
    got = await system.get()
    assert (got.topic, got.payload) == ("$SYS/broker/uptime", b"42")
    assert await system.nothing(within=0.3)
    assert await wide.nothing(within=0.3)  # [MQTT-4.7.2-1]
    # Nor is the retained copy sent for a wildcard filter; an explicit "$SYS/…" filter gets it.
    late = PahoClient("late", broker.port)
    await late.connect()
    assert await late.subscribe("#") == [1]
    assert await late.nothing(within=0.3)
    assert await late.subscribe("$SYS/broker/+") == [1]
    assert (await late.get()).topic == "$SYS/broker/uptime"
    # A client's own $-publish is acknowledged and dropped: no subscriber, "$SYS/#" included, gets it.
    await wide.publish("$SYS/broker/uptime", b"forged", qos=1)
    await wide.publish("lab/after", b"sentinel", qos=1)
    assert (await wide.get()).topic == "lab/after"
    assert await system.nothing(within=0.3)
    assert broker.broker.refusals["dollar_topic"] == 1
    for client in (wide, system, late):
        await client.disconnect()


async def test_overlapping_subscriptions_deliver_once_at_the_highest_qos(broker_factory):
    broker, _ = await broker_factory()
    node = PahoClient("watcher", broker.port)
    await node.connect()
    assert await node.subscribe("lab/#", qos=0) == [0]
    assert await node.subscribe("lab/+/x", qos=1) == [1]
    assert await node.subscribe("lab/a/x", qos=0) == [0]
    publisher = PahoClient("publisher", broker.port)
    await publisher.connect()

    await publisher.publish("lab/a/x", b"1", qos=1)  # matches all three: delivered once, at QoS 1 [MQTT-3.3.5-1]
    await publisher.publish("lab/a/x", b"2", qos=0)  # ... at QoS 0: min(publish, highest granted)
    await publisher.publish("lab/b", b"3", qos=1)  # only "lab/#" (granted 0) matches
    await broker.publish("lab/c/x", b"4", qos=1)  # the gateway's own publishes follow the same rule
    received = [await node.get() for _ in range(4)]
    assert [(m.topic, m.payload, m.qos) for m in received] == [
        ("lab/a/x", b"1", 1), ("lab/a/x", b"2", 0), ("lab/b", b"3", 0), ("lab/c/x", b"4", 1)]
    assert await node.nothing(within=0.3)  # no second copy of any of them

    # Downgrading the QoS 1 filter leaves QoS 0 as the highest.
    assert await node.subscribe("lab/+/x", qos=0) == [0]
    await publisher.publish("lab/a/x", b"5", qos=1)
    got = await node.get()
    assert (got.payload, got.qos) == (b"5", 0)
    assert await node.nothing(within=0.3)
    await eventually(lambda: broker.stats()["inflight_out"] == 0)
    await publisher.disconnect()
    await node.disconnect()
