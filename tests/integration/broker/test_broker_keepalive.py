"""Keepalive is enforced (upstream #308): a silent node is disconnected after 1.5 × keepalive and its will fires."""

from __future__ import annotations

import asyncio

from tests.conftest import eventually, run_gateway
from tests.fakes.mqtt_clients import PahoClient, RawClient

STATUS = "hydro/gh1/zone-a/nd-ph-1/status"
OFFLINE = b'{"status":"offline"}'
HELLO = {"message_type": "node_hello", "hardware_id": "esp32-aa01", "node_type": "ph", "fw_version": "1.0.0"}


async def test_client_silent_behind_an_open_socket_is_cut_after_one_and_a_half_keepalives(broker_factory):
    broker, sink = await broker_factory()
    loop = asyncio.get_running_loop()
    silent = RawClient(broker.port)  # CONNECT, then nothing: TCP stays open, as behind a NAT when power fails
    started = loop.time()
    assert await silent.connect("nd-ph-1", keepalive=1, will=(STATUS, OFFLINE)) == (0, False)

    await eventually(lambda: sink.on(STATUS), timeout=30)
    # Never before 1.5 × keepalive; a busy machine can only make it later, so no upper bound is asserted.
    elapsed = loop.time() - started
    assert elapsed >= 1.4, elapsed
    assert sink.on(STATUS)[0].payload == OFFLINE
    assert await silent.closed_by_server(timeout=10)
    assert broker.clients() == []
    assert broker.stats()["keepalive_expired"] == 1


async def test_paho_node_that_stops_pinging_goes_offline_and_a_pinging_one_stays(broker_factory):
    broker, sink = await broker_factory()
    watcher = PahoClient("watcher", broker.port)
    await watcher.connect()
    assert await watcher.subscribe("hydro/+/+/+/status") == [1]
    alive_status = "hydro/gh1/zone-a/nd-ph-2/status"
    # paho pings about once per keepalive: 2 s leaves it a second of slack before the 3 s cut-off on a
    # busy machine (with 1 s, half a second late was enough to be cut).
    alive = PahoClient("nd-ph-2", broker.port, keepalive=2, will=(alive_status, OFFLINE))
    node = PahoClient("nd-ph-1", broker.port, keepalive=1, will=(STATUS, OFFLINE))
    loop = asyncio.get_running_loop()
    await alive.connect()
    alive_since = loop.time()
    await node.connect()

    await node.go_silent()
    will = await watcher.get(timeout=30)
    assert (will.topic, will.payload) == (STATUS, OFFLINE)
    # Two of its cut-off windows later the node that keeps sending PINGREQ is still connected, will unsent.
    await asyncio.sleep(max(0.0, alive_since + 2 * 2 * 1.5 - loop.time()))
    assert [c["client_id"] for c in broker.clients()] == ["watcher", "nd-ph-2"]
    assert await watcher.nothing(within=0.3)
    assert sink.on(alive_status) == []
    await alive.disconnect()  # DISCONNECT discards the will [MQTT-3.14.4-3]
    await eventually(lambda: len(broker.clients()) == 1)
    assert sink.on(alive_status) == []
    await watcher.disconnect()
    await node.kill()  # the silent node's own socket (the broker already dropped its side)


async def test_silent_node_is_marked_offline_by_the_gateway(make_settings):
    async with run_gateway(make_settings()) as gw:
        # The node says hello, then reboots and connects again with a will and a 1 s keepalive, and then
        # sends nothing at all: no packet of its own has to arrive in time, however busy the machine.
        hello = PahoClient("nd-ph-1", gw.services.broker.port)
        await hello.connect()
        await hello.publish("hydro/node_hello", HELLO)
        await hello.disconnect()  # clean: no will
        await eventually(lambda: gw.services.registry.get("nd-ph-1"), timeout=30)
        assert gw.services.registry.get("nd-ph-1").online
        silent = RawClient(gw.services.broker.port)
        assert await silent.connect("nd-ph-1", keepalive=1, will=(STATUS, OFFLINE)) == (0, False)

        # Wait for what the operator sees, not for a duration: the node shown offline, with its alert.
        await eventually(lambda: not gw.services.registry.get("nd-ph-1").online, timeout=60)
        alerts = await gw.services.alerts.active()
        assert [(a["code"], a["scope"]) for a in alerts] == [("infra_node_offline", "nd-ph-1")]
        assert alerts[0]["details"]["reason"] == "last_will"
        row = await gw.services.db.fetchone("SELECT online FROM nodes WHERE uid='nd-ph-1'")
        assert row["online"] == 0
        assert gw.services.broker.stats()["keepalive_expired"] == 1
        assert await silent.closed_by_server(timeout=30)


async def test_last_will_and_missed_heartbeats_together_record_one_offline(make_settings):
    # Both paths to "offline" racing: recorded once (one alert, one NODE_OFFLINE event), and a heartbeat
    # racing them brings the node back with its alert resolved.
    async with run_gateway(make_settings()) as gw:
        hello = PahoClient("nd-ph-1", gw.services.broker.port)
        await hello.connect()
        await hello.publish("hydro/node_hello", HELLO)
        await eventually(lambda: gw.services.registry.get("nd-ph-1"), timeout=30)
        registry = gw.services.registry
        node = registry.get("nd-ph-1")
        # What on_status (the will) and supervise_once (silence) each call, started in the same iteration.
        await asyncio.gather(registry._mark_offline(node, "last_will"),
                             registry._mark_offline(node, "missed_heartbeats"))
        events = await gw.services.db.fetchall("SELECT type FROM zone_events WHERE type LIKE 'NODE_%'")
        assert [e["type"] for e in events] == ["NODE_OFFLINE"]
        assert [a["count"] for a in await gw.services.alerts.active()] == [1]
        await asyncio.gather(registry._mark_offline(node, "last_will"), registry._mark_seen(node))
        assert registry.get("nd-ph-1").online
        assert await gw.services.alerts.active() == []
        await hello.disconnect()
