"""Pre-login connections (TCP open, no CONNECT yet) are bounded per IP and overall, with a shorter CONNECT
timeout under pressure, so half-open sockets never keep a real node out (issue 21)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from tests.conftest import eventually, run_gateway
from tests.fakes.mqtt_clients import PahoClient, RawClient, connect_packet

HELLO = {"message_type": "node_hello", "hardware_id": "esp32-aa01", "node_type": "ph", "fw_version": "1.0.0"}


async def _half_open(broker, source: str = "127.0.0.1") -> RawClient:
    """A TCP connection that sends nothing, once the broker has it registered as pre-login."""
    before = broker.stats()["prelogin_seen"]
    sock = RawClient(broker.port)
    await sock.open(source)
    # Wait until the broker registered it: its place in line is known.
    await eventually(lambda: broker.stats()["prelogin_seen"] == before + 1)
    return sock


async def _still_open(sock: RawClient) -> bool:
    """It can still log in: CONNECT gets CONNACK 0."""
    sock.send(connect_packet("late-bloomer"))
    kind, _, body = await sock.read_packet(timeout=10)
    return kind == 2 and body[1] == 0


async def test_a_new_connection_from_an_ip_at_its_cap_closes_that_ips_oldest(broker_factory):
    broker, _ = await broker_factory(prelogin_max_per_ip=3, connect_timeout_s=60.0)
    socks = []
    for n in range(1, 6):
        socks.append(await _half_open(broker))
        assert broker.stats()["prelogin"] == min(n, 3)
    assert await socks[0].closed_by_server(timeout=10) and await socks[1].closed_by_server(timeout=10)
    assert broker.stats()["prelogin_ip_limit"] == 2
    assert await _still_open(socks[2])  # the three newest were kept
    for sock in socks:
        sock.close()


async def test_over_the_overall_cap_the_most_crowded_ip_loses_its_oldest(broker_factory):
    broker, _ = await broker_factory(prelogin_max=4, prelogin_max_per_ip=10, connect_timeout_s=60.0)
    flood = [await _half_open(broker, "127.0.0.2") for _ in range(3)]
    slow_node = await _half_open(broker, "127.0.0.3")
    newcomer = await _half_open(broker, "127.0.0.4")
    assert await flood[0].closed_by_server(timeout=10)
    assert broker.stats()["prelogin_limit"] == 1
    assert broker.stats()["prelogin"] == 4
    assert await _still_open(slow_node)  # the quiet IP kept its connection
    for sock in (*flood, slow_node, newcomer):
        sock.close()


async def test_under_pressure_pending_connections_get_the_short_connect_timeout(broker_factory):
    broker, _ = await broker_factory(prelogin_pressure_at=2, connect_timeout_s=60.0, connect_timeout_pressure_s=0.2)
    socks = [await _half_open(broker) for _ in range(3)]
    # The normal timeout is a minute; under pressure each is closed 0.2 s after its accept.
    for sock in socks:
        assert await sock.closed_by_server(timeout=20)
    assert broker.stats()["connect_timeout_pressure"] == 3
    assert broker.stats().get("connect_timeout", 0) == 0
    await eventually(lambda: broker.stats()["prelogin"] == 0)
    node = PahoClient("nd-1", broker.port)
    assert (await node.connect())[0] == "Success"
    await node.disconnect()


async def _metric(gw, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{gw.web_port}/metrics") as resp:
        text = await resp.text()
    return next((float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " ")), 0.0)


async def test_400_half_open_connections_do_not_keep_a_node_out_of_the_gateway(make_settings):
    async with run_gateway(make_settings()) as gw:  # default bounds
        port = gw.services.broker.port
        mute: list[RawClient] = []
        try:
            for _ in range(400):  # from 127.0.0.1, never sending CONNECT
                sock = RawClient(port)
                await sock.open()
                mute.append(sock)
            node = PahoClient("nd-ph-1", port)
            assert (await node.connect(timeout=30))[0] == "Success"
            await node.publish("hydro/node_hello", HELLO)  # PUBACKed
            await eventually(lambda: gw.services.registry.get("nd-ph-1"), timeout=30)
            # At most prelogin_max_per_ip (64) of them are waiting; the rest were closed and counted.
            await eventually(lambda: gw.services.broker.stats().get("prelogin_ip_limit", 0) >= 400 - 64, timeout=30)
            assert gw.services.broker.stats()["prelogin"] <= 64
            name = 'hydro_broker_refusals_total{reason="prelogin_ip_limit"}'
            assert await eventually(lambda: _metric_at_least(gw, name, 400 - 64), timeout=30)
            await node.disconnect()
        finally:
            for sock in mute:
                with contextlib.suppress(OSError):
                    sock.close()
            await asyncio.sleep(0)


async def _metric_at_least(gw, name: str, value: float) -> bool:
    return await _metric(gw, name) >= value
