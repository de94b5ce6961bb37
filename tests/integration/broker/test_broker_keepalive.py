"""Keepalive is enforced (upstream #308): a silent node is disconnected after 1.5 × keepalive and its will fires."""

from __future__ import annotations

import asyncio

from mqtt_clients import PahoClient, RawClient

from tests.conftest import eventually, run_gateway

STATUS = "hydro/gh1/zone-a/nd-ph-1/status"
OFFLINE = b'{"status":"offline"}'
HELLO = {"message_type": "node_hello", "hardware_id": "esp32-aa01", "node_type": "ph", "fw_version": "1.0.0"}


async def test_client_silent_behind_an_open_socket_is_cut_after_one_and_a_half_keepalives(broker_factory):
    broker, sink = await broker_factory()
    loop = asyncio.get_running_loop()
    silent = RawClient(broker.port)  # CONNECT, then nothing: TCP stays open, as behind a NAT when power fails
    started = loop.time()
    assert await silent.connect("nd-ph-1", keepalive=1, will=(STATUS, OFFLINE)) == (0, False)

    await eventually(lambda: sink.on(STATUS), timeout=5)
    elapsed = loop.time() - started
    assert 1.4 <= elapsed < 2.5, elapsed
    assert sink.on(STATUS)[0].payload == OFFLINE
    assert await silent.closed_by_server(timeout=2)
    assert broker.clients() == []
    assert broker.stats()["keepalive_expired"] == 1


async def test_paho_node_that_stops_pinging_goes_offline_and_a_pinging_one_stays(broker_factory):
    broker, sink = await broker_factory()
    watcher = PahoClient("watcher", broker.port)
    await watcher.connect()
    assert await watcher.subscribe("hydro/+/+/+/status") == [1]
    alive_status = "hydro/gh1/zone-a/nd-ph-2/status"
    alive = PahoClient("nd-ph-2", broker.port, keepalive=1, will=(alive_status, OFFLINE))
    node = PahoClient("nd-ph-1", broker.port, keepalive=1, will=(STATUS, OFFLINE))
    await alive.connect()
    await node.connect()

    await node.go_silent()
    will = await watcher.get(timeout=5)
    assert (will.topic, will.payload) == (STATUS, OFFLINE)
    # Three keepalive periods later the node that keeps sending PINGREQ is still connected, will unsent.
    await asyncio.sleep(1.0)
    assert [c["client_id"] for c in broker.clients()] == ["watcher", "nd-ph-2"]
    assert await watcher.nothing(within=0.3)
    assert sink.on(alive_status) == []
    await alive.disconnect()  # DISCONNECT discards the will [MQTT-3.14.4-3]
    await eventually(lambda: len(broker.clients()) == 1)
    assert sink.on(alive_status) == []
    await watcher.disconnect()


async def test_silent_node_is_marked_offline_by_the_gateway(make_settings):
    async with run_gateway(make_settings()) as gw:
        node = PahoClient("nd-ph-1", gw.broker.port, keepalive=1, will=(STATUS, OFFLINE))
        await node.connect()
        await node.publish("hydro/node_hello", HELLO)
        await eventually(lambda: gw.registry.get("nd-ph-1"))
        await node.go_silent()
        await eventually(lambda: not gw.registry.get("nd-ph-1").online, timeout=5)
        assert [a["code"] for a in await gw.alerts.active()] == ["infra_node_offline"]
