"""Retained node configs: sent on SUBSCRIBE, once, and only for subscriptions the ACL allowed."""

from __future__ import annotations

import json

from conftest import PASSWORD, accounts

from tests.fakes.mqtt_clients import PahoClient

CONFIG_1 = "hydro/gh1/zone-a/nd-ph-1/config"
CONFIG_2 = "hydro/gh1/zone-a/nd-ph-2/config"


def config(uid: str, version: int) -> bytes:
    return json.dumps({"node_uid": uid, "version": version}).encode()


async def test_retained_config_reaches_each_new_subscriber_once_with_the_retain_flag(broker_factory):
    broker, _ = await broker_factory()
    await broker.publish(CONFIG_1, config("nd-ph-1", 1), qos=1, retain=True)
    for client_id in ("nd-ph-1", "nd-ph-1-spare"):
        node = PahoClient(client_id, broker.port)
        await node.connect()
        await node.subscribe(CONFIG_1)
        got = await node.get()
        assert (got.topic, got.payload, got.retain, got.qos) == (CONFIG_1, config("nd-ph-1", 1), True, 1)
        assert await node.nothing(within=0.4)
        await node.disconnect()
    # An empty retained payload clears the topic [MQTT-3.3.1-10].
    await broker.publish(CONFIG_1, b"", qos=1, retain=True)
    late = PahoClient("late", broker.port)
    await late.connect()
    await late.subscribe(CONFIG_1)
    assert await late.nothing(within=0.4)
    await late.disconnect()


async def test_retained_messages_never_bypass_the_acl(broker_factory):
    users = accounts("nd-ph-1", "nd-ph-2") + accounts("svc-monitor", role="service")
    broker, _ = await broker_factory(anonymous=False, users=users)
    monitor = PahoClient("svc-monitor", broker.port, username="svc-monitor", password=PASSWORD, clean_session=False)
    await monitor.connect()
    assert await monitor.subscribe("hydro/#") == [1]
    await broker.publish(CONFIG_2, config("nd-ph-2", 1), qos=1, retain=True)
    await broker.publish(CONFIG_1, config("nd-ph-1", 1), qos=1, retain=True)

    node = PahoClient("nd-ph-1", broker.port, username="nd-ph-1", password=PASSWORD, clean_session=False)
    assert await node.connect() == ("Success", False)
    assert await node.subscribe("hydro/#") == [128]
    assert await node.subscribe("hydro/+/+/+/config") == [128]
    assert await node.subscribe(CONFIG_2) == [128]
    assert await node.subscribe(CONFIG_1) == [1]
    own = await node.get()
    assert (own.topic, own.retain) == (CONFIG_1, True)
    assert await node.nothing(within=0.4)
    await node.disconnect()
    # amqtt pushed, on CONNECT, the retained messages of every filter any client held (here hydro/#).
    back = PahoClient("nd-ph-1", broker.port, username="nd-ph-1", password=PASSWORD, clean_session=False)
    assert await back.connect() == ("Success", True)
    assert await back.nothing(within=0.6)
    await back.disconnect()
    await monitor.disconnect()


async def test_config_changed_while_the_node_was_away_arrives_exactly_once(broker_factory):
    broker, _ = await broker_factory()
    await broker.publish(CONFIG_1, config("nd-ph-1", 1), qos=1, retain=True)
    node = PahoClient("nd-ph-1", broker.port, clean_session=False)
    await node.connect()
    await node.subscribe(CONFIG_1)
    assert (await node.get()).payload == config("nd-ph-1", 1)
    await node.disconnect()

    await broker.publish(CONFIG_1, config("nd-ph-1", 2), qos=1, retain=True)
    back = PahoClient("nd-ph-1", broker.port, clean_session=False)
    assert await back.connect() == ("Success", True)
    got = await back.get()
    # Queued while away and delivered on the established subscription: retain flag 0 [MQTT-3.3.1-9].
    assert (got.payload, got.retain) == (config("nd-ph-1", 2), False)
    assert await back.nothing(within=0.6)  # amqtt also replayed the retained copy: twice
    await back.disconnect()
