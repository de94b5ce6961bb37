"""Persistent sessions, QoS 1 redelivery and delivery QoS, as ESP32 nodes rely on them (real paho clients)."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import PASSWORD, accounts

from tests.conftest import eventually
from tests.fakes.mqtt_clients import PahoClient, RawClient, packet, publish_packet

COMMAND = "hydro/gh1/zone-a/nd-ph-1/pump/command"
COMMANDS = "hydro/+/+/nd-ph-1/+/command"


def cmd(n: int) -> bytes:
    return json.dumps({"cmd": "run_pump", "cmd_id": f"c{n}", "params": {"seconds": n}}).encode()


@pytest.mark.parametrize("mode", ["demo-anonymous", "run-authenticated"])
async def test_persistent_session_keeps_subscriptions_and_the_qos1_messages_sent_while_away(broker_factory, mode):
    run = mode.startswith("run")
    broker, _ = await broker_factory(anonymous=not run, users=accounts("nd-ph-1") if run else ())
    creds = {"username": "nd-ph-1", "password": PASSWORD} if run else {}
    node = PahoClient("nd-ph-1", broker.port, clean_session=False, **creds)
    assert await node.connect() == ("Success", False)
    assert await node.subscribe(COMMANDS) == [1]
    await node.disconnect()
    # Until the broker has read the DISCONNECT the session is still online and would queue the QoS 0 message too.
    await eventually(lambda: not broker.clients())

    for n in (1, 2, 3):
        await broker.publish(COMMAND, cmd(n), qos=1)
    await broker.publish(COMMAND, b"qos0 is not kept for an absent client", qos=0)

    back = PahoClient("nd-ph-1", broker.port, clean_session=False, **creds)
    assert await back.connect() == ("Success", True)
    got = [await back.get() for _ in range(3)]
    assert [(m.payload, m.qos) for m in got] == [(cmd(1), 1), (cmd(2), 1), (cmd(3), 1)]
    assert await back.nothing(within=0.3)
    # Still subscribed without subscribing again.
    await broker.publish(COMMAND, cmd(4), qos=1)
    assert (await back.get()).payload == cmd(4)
    await back.disconnect()


async def test_unacknowledged_command_is_kept_past_5_s_and_redelivered_with_dup_on_reconnect(broker_factory):
    # amqtt dropped a QoS 1 message whose PUBACK had not come within 5 s (upstream #391).
    broker, _ = await broker_factory(inflight_retry_s=60)
    flaky = PahoClient("nd-ph-1", broker.port, clean_session=False, manual_ack=True)
    await flaky.connect()
    await flaky.subscribe(COMMANDS)
    await broker.publish(COMMAND, cmd(1), qos=1)
    first = await flaky.get()
    assert (first.payload, first.dup) == (cmd(1), False)

    await asyncio.sleep(5.5)  # no PUBACK: the Wi-Fi link is gone but TCP has not noticed yet
    assert broker.stats()["inflight_out"] == 1
    await flaky.kill()

    back = PahoClient("nd-ph-1", broker.port, clean_session=False)
    assert await back.connect() == ("Success", True)
    again = await back.get()
    assert (again.topic, again.payload, again.qos, again.dup) == (COMMAND, cmd(1), 1, True)
    await eventually(lambda: broker.stats()["inflight_out"] == 0)
    assert await back.nothing(within=0.3)
    await back.disconnect()


async def test_unacknowledged_qos1_is_resent_with_dup_while_connected_until_acked(broker_factory):
    broker, _ = await broker_factory(inflight_retry_s=0.4)
    node = PahoClient("nd-ph-1", broker.port, manual_ack=True)
    await node.connect()
    await node.subscribe(COMMANDS)
    await broker.publish(COMMAND, cmd(1), qos=1)
    first, second = await node.get(), await node.get(timeout=3)
    assert (first.dup, second.dup, second.payload, second.mid) == (False, True, cmd(1), first.mid)
    node.ack(second.mid)
    await eventually(lambda: broker.stats()["inflight_out"] == 0)
    while not node.messages.empty():  # a re-send may have crossed the PUBACK
        assert node.messages.get_nowait().dup
    assert await node.nothing(within=1.0)
    await node.disconnect()


async def test_clean_session_discards_the_old_session(broker_factory):
    broker, _ = await broker_factory()
    node = PahoClient("nd-ph-1", broker.port, clean_session=False)
    await node.connect()
    await node.subscribe(COMMANDS)
    await node.disconnect()
    await broker.publish(COMMAND, cmd(1), qos=1)

    clean = PahoClient("nd-ph-1", broker.port, clean_session=True)
    assert await clean.connect() == ("Success", False)
    assert await clean.nothing(within=0.5)
    await clean.disconnect()
    again = PahoClient("nd-ph-1", broker.port, clean_session=False)
    assert await again.connect() == ("Success", False)
    await again.disconnect()


async def test_delivery_qos_is_the_lower_of_publish_and_subscription_qos(broker_factory):
    broker, _ = await broker_factory()
    sub1 = PahoClient("monitor-1", broker.port)
    sub0 = PahoClient("monitor-0", broker.port)
    publisher = PahoClient("publisher", broker.port)
    for client in (sub1, sub0, publisher):
        await client.connect()
    assert await sub1.subscribe("lab/q1", qos=1) == [1]
    assert await sub0.subscribe("lab/q0", qos=0) == [0]
    assert await sub1.subscribe("lab/q2", qos=2) == [1]  # granted at most QoS 1

    await publisher.publish("lab/q1", b"a", qos=0)  # amqtt upgraded this to the subscription's QoS 1
    await publisher.publish("lab/q0", b"b", qos=1)  # ... and the first gateway broker to the publish's QoS 1
    await publisher.publish("lab/q2", b"c", qos=1)
    got = {m.topic: m.qos for m in [await sub1.get(), await sub0.get(), await sub1.get()]}
    assert got == {"lab/q1": 0, "lab/q0": 0, "lab/q2": 1}
    for client in (sub1, sub0, publisher):
        await client.disconnect()


async def test_client_id_of_another_accounts_session_is_refused(broker_factory):
    broker, _ = await broker_factory(anonymous=False, users=accounts("nd-ph-1", "nd-ph-2"))
    owner = PahoClient("nd-ph-1", broker.port, clean_session=False, username="nd-ph-1", password=PASSWORD)
    await owner.connect()
    await owner.subscribe(COMMANDS)

    intruder = PahoClient("nd-ph-1", broker.port, clean_session=False, username="nd-ph-2", password=PASSWORD)
    assert (await intruder.connect())[0] == "Client identifier not valid"
    impostor = PahoClient("nd-ph-1", broker.port, username="nd-ph-1", password="wrong")
    assert (await impostor.connect())[0] == "Bad user name or password"
    # Neither attempt took the owner's connection or session.
    await broker.publish(COMMAND, cmd(1), qos=1)
    assert (await owner.get()).payload == cmd(1)
    await owner.disconnect()
    await broker.publish(COMMAND, cmd(2), qos=1)
    intruder = PahoClient("nd-ph-1", broker.port, clean_session=False, username="nd-ph-2", password=PASSWORD)
    assert (await intruder.connect())[0] == "Client identifier not valid"
    back = PahoClient("nd-ph-1", broker.port, clean_session=False, username="nd-ph-1", password=PASSWORD)
    assert await back.connect() == ("Success", True)
    assert (await back.get()).payload == cmd(2)
    assert broker.broker.refusals["client_id_in_use"] == 2
    await back.disconnect()


async def test_reconnect_while_the_old_connection_is_still_open_takes_it_over(broker_factory):
    broker, sink = await broker_factory()
    status = "hydro/gh1/zone-a/nd-ph-1/status"
    old = PahoClient("nd-ph-1", broker.port, clean_session=False, will=(status, b'{"status":"offline"}'))
    await old.connect()
    await old.subscribe(COMMANDS)
    await old.go_silent()  # the node rebooted; its old TCP connection is half-open

    new = PahoClient("nd-ph-1", broker.port, clean_session=False)
    assert await new.connect() == ("Success", True)
    await broker.publish(COMMAND, cmd(1), qos=1)
    assert (await new.get()).payload == cmd(1)
    assert [c["client_id"] for c in broker.clients()] == ["nd-ph-1"]
    assert broker.stats()["takeover"] == 1
    assert [m.payload for m in sink.on(status)] == [b'{"status":"offline"}']  # the old connection's will
    await new.disconnect()


async def test_qos2_publish_is_passed_on_once_even_when_resent(broker_factory):
    broker, sink = await broker_factory()
    node = PahoClient("nd-ph-1", broker.port)
    await node.connect()
    await node.publish("hydro/gh1/zone-a/nd-ph-1/telemetry", b'{"n": 1}', qos=2)  # returns after PUBCOMP
    raw = RawClient(broker.port)
    await raw.connect("nd-ph-2")
    topic = "hydro/gh1/zone-a/nd-ph-2/telemetry"
    for _ in range(2):  # the second is the re-send of a client that missed the PUBREC
        raw.send(publish_packet(topic, b'{"n": 2}', qos=2, pid=7))
        assert await raw.read_packet() == (5, 0, b"\x00\x07")  # PUBREC
    raw.send(packet(0x62, b"\x00\x07"))  # PUBREL
    assert await raw.read_packet() == (7, 0, b"\x00\x07")  # PUBCOMP
    assert [m.payload for m in sink.messages] == [b'{"n": 1}', b'{"n": 2}']
    raw.close()
    await node.disconnect()


async def test_qos0_messages_still_queued_when_a_persistent_client_goes_are_dropped_and_qos1_kept(broker_factory):
    broker, _ = await broker_factory(inflight_window=2, inflight_retry_s=60)
    node = PahoClient("nd-ph-1", broker.port, clean_session=False, manual_ack=True)
    await node.connect()
    await node.subscribe(COMMANDS)
    for n in (1, 2, 3):  # the third waits behind the full in-flight window of 2
        await broker.publish(COMMAND, cmd(n), qos=1)
    await broker.publish(COMMAND, b"status ping", qos=0)  # queued behind it while the node is online
    assert [(await node.get()).payload for _ in range(2)] == [cmd(1), cmd(2)]
    await node.kill()
    await eventually(lambda: not broker.clients())

    back = PahoClient("nd-ph-1", broker.port, clean_session=False)
    assert await back.connect() == ("Success", True)
    got = [await back.get() for _ in range(3)]
    assert [(m.payload, m.dup) for m in got] == [(cmd(1), True), (cmd(2), True), (cmd(3), False)]
    assert await back.nothing(within=0.3)  # the QoS 0 message went with the connection it was meant for
    await back.disconnect()
