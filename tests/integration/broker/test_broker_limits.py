"""Connection limits: refused with a CONNACK, counted, and the slot comes back."""

from __future__ import annotations

from tests.conftest import eventually
from tests.fakes.mqtt_clients import PahoClient, RawClient, publish_packet


async def test_clients_over_max_connections_get_server_unavailable(broker_factory):
    broker, _ = await broker_factory(max_connections=2)
    first, second = PahoClient("nd-1", broker.port), PahoClient("nd-2", broker.port)
    assert (await first.connect())[0] == "Success"
    assert (await second.connect())[0] == "Success"
    third = PahoClient("nd-3", broker.port)
    assert (await third.connect(timeout=3))[0] == "Server unavailable"  # amqtt left it waiting, no CONNACK
    assert broker.broker.refusals["max_connections"] == 1

    await first.disconnect()
    await eventually(lambda: broker.stats()["connections"] == 1)
    again = PahoClient("nd-3", broker.port)
    assert (await again.connect())[0] == "Success"
    await again.disconnect()
    await second.disconnect()


async def test_a_connection_that_never_sends_connect_is_closed_and_frees_its_slot(broker_factory):
    broker, _ = await broker_factory(max_connections=1, connect_timeout_s=0.5)
    mute = RawClient(broker.port)
    await mute.open()
    assert await mute.closed_by_server(timeout=3)
    assert broker.broker.refusals["connect_timeout"] == 1
    node = PahoClient("nd-1", broker.port)
    assert (await node.connect())[0] == "Success"
    await node.disconnect()


async def test_a_packet_over_the_size_limit_closes_the_connection(broker_factory):
    broker, sink = await broker_factory(max_payload_bytes=1024)  # packets up to 4 × 1024 + 1024 bytes
    node = RawClient(broker.port)
    assert await node.connect("nd-1") == (0, False)
    # Oversize for the router (which counts it as such) but within what the broker reads.
    node.send(publish_packet("hydro/gh1/zone-a/nd-1/telemetry", b"x" * 2000))
    await eventually(lambda: sink.messages)
    node.send(publish_packet("hydro/gh1/zone-a/nd-1/telemetry", b"x" * 6000))
    assert await node.closed_by_server(timeout=3)
    assert broker.broker.refusals["packet_too_large"] == 1
    assert [len(m.payload) for m in sink.messages] == [2000]


async def test_protocol_violations_close_the_connection_and_publish_the_will(broker_factory):
    broker, sink = await broker_factory()
    will = ("hydro/gh1/zone-a/nd-1/status", b'{"status":"offline"}')
    for garbage in (publish_packet("hydro/+/wildcard", b"{}"), b"\xf0\x00", publish_packet("x", b"", qos=3)):
        node = RawClient(broker.port)
        assert await node.connect("nd-1", will=will) == (0, False)
        node.send(garbage)
        assert await node.closed_by_server(timeout=3)
    await eventually(lambda: len(sink.on(will[0])) == 3)
    refusals = broker.broker.refusals
    assert (refusals["invalid_topic"], refusals["protocol_violation"], refusals["malformed_packet"]) == (1, 1, 1)
