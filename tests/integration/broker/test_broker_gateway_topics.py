"""Only the gateway publishes on command and config topics (issue 13): no MQTT client, whatever its role or
the mode, reaches a node's ``…/command`` or ``…/config`` topic; the gateway's own publishes still do."""

from __future__ import annotations

import json

import aiohttp
from conftest import PASSWORD, accounts, password_hash

from gateway.telemetry_metrics import Metric
from tests.conftest import ADMIN_TOKEN, eventually, run_gateway
from tests.fakes.mqtt_clients import PahoClient

COMMAND = "hydro/gh1/zone-a/nd-water-1/pump_drain/command"
CONFIG = "hydro/gh1/zone-a/nd-water-1/config"
RUN_PUMP = {"cmd": "run_pump", "cmd_id": "evil-1", "params": {"duration_s": 600}}
# Same shape, segments that are not uids: parse_topic rejects it, but the node's "+" filter matches it.
ODD_COMMAND = "hydro/gh 1/zone-a/nd-water-1/pump_drain/command"
WATER_HELLO = {"message_type": "node_hello", "hardware_id": "esp32-aa02", "node_type": "pump", "fw_version": "2.1.0"}


async def test_no_client_publishes_on_command_or_config_topics_whatever_its_role(broker_factory):
    users = accounts("nd-water-1", "nd-ph-1") + accounts("svc-1", role="service")
    broker, sink = await broker_factory(anonymous=True, users=users)  # demo: anonymous clients allowed
    victim = PahoClient("nd-water-1", broker.port, username="nd-water-1", password=PASSWORD)
    await victim.connect()
    assert await victim.subscribe("hydro/+/+/nd-water-1/+/command") == [1]
    assert await victim.subscribe("hydro/+/+/nd-water-1/config") == [1]
    watcher = PahoClient("watcher", broker.port)  # demo-mode anonymous: may subscribe to everything
    await watcher.connect()
    assert await watcher.subscribe("#") == [1]
    attackers = {
        "anonymous": PahoClient("anon", broker.port),
        "service": PahoClient("svc", broker.port, username="svc-1", password=PASSWORD),
        "other node": PahoClient("nd-ph-1", broker.port, username="nd-ph-1", password=PASSWORD),
    }
    attempts = 0
    for name, attacker in attackers.items():
        assert (await attacker.connect())[0] == "Success", name
        for qos in (0, 1, 2):
            await attacker.publish(COMMAND, RUN_PUMP, qos=qos)  # QoS 1/2: returns once acknowledged
            await attacker.publish(ODD_COMMAND, RUN_PUMP, qos=qos)
            await attacker.publish(CONFIG, {"node_uid": "nd-water-1", "channels": []}, qos=qos, retain=True)
            attempts += 3
    # The node itself, echoing a command to its own topic, is refused the same way.
    await victim.publish(COMMAND, RUN_PUMP, qos=1)
    attempts += 1
    # Each client's packets are handled in order: once its sentinel reached the router, everything it
    # sent before has been handled.
    for name, attacker in attackers.items():
        topic = "hydro/gh1/zone-a/nd-ph-1/telemetry" if name == "other node" else f"lab/{name}"
        await attacker.publish(topic, b"sentinel", qos=1)
    await eventually(lambda: len(sink.messages) == 3)
    assert all(m.payload == b"sentinel" for m in sink.messages)
    assert broker.broker.refusals["acl_gateway_topic"] == attempts
    assert broker.stats()["retained"] == 0  # no config was retained either
    assert await victim.nothing(within=0.3)
    assert {(await watcher.get()).payload for _ in range(3)} == {b"sentinel"}
    assert await watcher.nothing(within=0.3)
    for attacker in attackers.values():
        await attacker.disconnect()

    # The gateway's own publishes (EmbeddedBroker.publish) still reach the node.
    await broker.publish(COMMAND, b'{"cmd": "run_pump", "cmd_id": "gw-1"}', qos=1)
    got = await victim.get()
    assert (got.topic, json.loads(got.payload)["cmd_id"], got.qos) == (COMMAND, "gw-1", 1)
    await broker.publish(CONFIG, b'{"node_uid": "nd-water-1"}', qos=1, retain=True)
    assert (await victim.get()).topic == CONFIG
    await victim.disconnect()
    await watcher.disconnect()


async def test_a_will_on_a_command_topic_refuses_the_connection_for_every_role(broker_factory):
    broker, _ = await broker_factory(anonymous=True, users=accounts("svc-1", role="service"))
    for client in (PahoClient("anon", broker.port, will=(COMMAND, json.dumps(RUN_PUMP).encode())),
                   PahoClient("svc", broker.port, username="svc-1", password=PASSWORD,
                          will=(CONFIG, b'{"channels": []}'))):
        assert (await client.connect())[0] == "Not authorized"
    assert broker.broker.refusals["acl_will"] == 2
    assert broker.clients() == []


async def _metric(gw, name: str) -> float | None:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{gw.web_port}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def test_gateway_in_demo_mode_node_gets_only_the_gateways_commands(make_settings):
    users = [{"username": "svc-1", "password_hash": password_hash(), "role": "service"},
             {"username": "nd-ph-1", "password_hash": password_hash(), "role": "node"}]
    async with run_gateway(make_settings(broker={"users": users})) as gw:
        # A demo node: anonymous, subscribed to its command topics, with a fresh water level in its zone.
        node = PahoClient("nd-water-1", gw.services.broker.port)
        await node.connect()
        assert await node.subscribe("hydro/gh1/zone-a/nd-water-1/+/command") == [1]
        await node.publish("hydro/node_hello", WATER_HELLO)
        await eventually(lambda: gw.services.registry.get("nd-water-1"))
        await node.publish("hydro/gh1/zone-a/nd-water-1/telemetry", {"metric_type": "water_level", "value": 62.0})
        await eventually(lambda: gw.services.latest.get(gw.services.registry.zone_id("zone-a"), Metric.WATER_LEVEL))

        attackers = [PahoClient("anon", gw.services.broker.port),
                     PahoClient("svc", gw.services.broker.port, username="svc-1", password=PASSWORD),
                     PahoClient("nd-ph-1", gw.services.broker.port, username="nd-ph-1", password=PASSWORD)]
        for attacker in attackers:
            assert (await attacker.connect())[0] == "Success"
            await attacker.publish(COMMAND, RUN_PUMP, qos=1)  # PUBACKed, never left in flight
        await node.publish(COMMAND, RUN_PUMP, qos=1)
        assert gw.services.broker.stats()["acl_gateway_topic"] == 4  # counted when handled, before the PUBACK
        assert await node.nothing(within=0.5)
        assert (await gw.services.db.fetchone("SELECT count(*) AS n FROM commands"))["n"] == 0
        # In /metrics once the housekeeping drained the counter (every 5 s).
        name = 'hydro_broker_refusals_total{reason="acl_gateway_topic"}'
        assert await eventually(lambda: _metric_is(gw, name, 4.0), timeout=30)
        # ... and an alert says who tried (housekeeping raises it in the same pass).
        expected = {"refused_total": 4, "last_client": "nd-water-1", "last_topic": COMMAND}
        await eventually(lambda: _alert_details_are(gw, "infra_mqtt_command_refused", expected), timeout=30)

        # The gateway's own command, through the HTTP API, reaches the node: the first command it sees.
        body = {"node_uid": "nd-water-1", "channel": "pump_drain", "cmd": "run_pump", "params": {"duration_s": 5}}
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{gw.web_port}/api/zones/zone-a/commands", json=body,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
            assert resp.status == 202, await resp.text()
            created = await resp.json()
        got = await node.get()
        assert got.topic == COMMAND and json.loads(got.payload)["cmd_id"] == created["cmd_id"]
        assert (await gw.services.db.fetchone("SELECT count(*) AS n FROM commands"))["n"] == 1
        for client in (*attackers, node):
            await client.disconnect()


async def _alert_details_are(gw, code: str, details: dict) -> bool:
    return any(a["code"] == code and a["details"] == details for a in await gw.services.alerts.active())


async def _metric_is(gw, name: str, value: float) -> bool:
    return await _metric(gw, name) == value
