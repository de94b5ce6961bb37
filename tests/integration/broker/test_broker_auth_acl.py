"""Run-mode authentication and the node ACL, with real clients; refusals are counted."""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from conftest import PASSWORD, accounts, password_hash

from gateway.broker.auth import Account
from tests.conftest import eventually, run_gateway
from tests.fakes.mqtt_clients import LagProbe, PahoClient, login_burst

TELEMETRY_1 = "hydro/gh1/zone-a/nd-ph-1/telemetry"
HELLO = {"message_type": "node_hello", "hardware_id": "esp32-aa01", "node_type": "ph", "fw_version": "1.0.0"}


async def test_anonymous_and_bad_credentials_are_refused_and_counted(broker_factory):
    broker, _ = await broker_factory(anonymous=False, users=accounts("nd-ph-1"))
    attempts = {
        "anonymous": PahoClient("a", broker.port),
        "wrong password": PahoClient("b", broker.port, username="nd-ph-1", password="nope"),
        "unknown user": PahoClient("c", broker.port, username="nd-ghost", password=PASSWORD),
        "right": PahoClient("nd-ph-1", broker.port, username="nd-ph-1", password=PASSWORD),
    }
    results = {name: (await client.connect())[0] for name, client in attempts.items()}
    assert results == {"anonymous": "Not authorized", "wrong password": "Bad user name or password",
                       "unknown user": "Bad user name or password", "right": "Success"}
    refused = broker.broker.refusals
    assert (refused["auth_anonymous_refused"], refused["auth_bad_password"], refused["auth_unknown_user"]) == (1, 1, 1)
    assert [c["username"] for c in broker.clients()] == ["nd-ph-1"]
    for client in attempts.values():  # the refused ones too: each still holds paho's sockets
        await client.disconnect()


async def test_node_publishes_only_under_its_own_uid_and_to_node_hello(broker_factory):
    broker, sink = await broker_factory(anonymous=False, users=accounts("nd-ph-1", "nd-ph-2"))
    node = PahoClient("nd-ph-1", broker.port, username="nd-ph-1", password=PASSWORD)
    await node.connect()
    allowed = [TELEMETRY_1, "hydro/node_hello", "hydro/gh1/zone-a/nd-ph-1/pump/command_response"]
    denied = ["hydro/gh1/zone-a/nd-ph-2/telemetry", "hydro/gh1/zone-a/nd-ph-2/pump/command_response",
              "elsewhere/x"]
    gateway_only = ["hydro/gh1/zone-a/nd-ph-1/pump/command", "hydro/gh1/zone-a/nd-ph-1/config"]
    for topic in denied + gateway_only + allowed:
        await node.publish(topic, {"metric_type": "ph", "value": 6.0})  # each one PUBACKed
    await eventually(lambda: len(sink.messages) == 3)
    assert [m.topic for m in sink.messages] == allowed
    assert sink.messages[0].username == "nd-ph-1"
    refusals = broker.broker.refusals
    assert (refusals["acl_publish"], refusals["acl_gateway_topic"]) == (len(denied), len(gateway_only))
    await node.disconnect()


async def test_node_subscribes_only_to_its_own_command_and_config_topics(broker_factory):
    broker, _ = await broker_factory(anonymous=False, users=accounts("nd-ph-1", "nd-ph-2"))
    node = PahoClient("nd-ph-1", broker.port, username="nd-ph-1", password=PASSWORD)
    await node.connect()
    codes = {f: (await node.subscribe(f))[0] for f in (
        "hydro/gh1/zone-a/nd-ph-1/config", "hydro/+/+/nd-ph-1/+/command",
        "hydro/gh1/zone-a/nd-ph-2/config", "hydro/+/+/+/+/command", "#", "hydro/gh1/zone-a/nd-ph-1/telemetry")}
    assert codes == {"hydro/gh1/zone-a/nd-ph-1/config": 1, "hydro/+/+/nd-ph-1/+/command": 1,
                     "hydro/gh1/zone-a/nd-ph-2/config": 128, "hydro/+/+/+/+/command": 128, "#": 128,
                     "hydro/gh1/zone-a/nd-ph-1/telemetry": 128}
    assert broker.broker.refusals["acl_subscribe"] == 4
    await broker.publish("hydro/gh1/zone-a/nd-ph-2/pump/command", b"not yours", qos=1)
    await broker.publish("hydro/gh1/zone-a/nd-ph-1/pump/command", b"yours", qos=1)
    assert (await node.get()).payload == b"yours"
    assert await node.nothing(within=0.3)
    await node.disconnect()


async def test_a_will_the_node_may_not_publish_refuses_the_connection(broker_factory):
    broker, sink = await broker_factory(anonymous=False, users=accounts("nd-ph-1", "nd-ph-2"))
    spoof = PahoClient("nd-ph-1", broker.port, username="nd-ph-1", password=PASSWORD,
                       will=("hydro/gh1/zone-a/nd-ph-2/status", b'{"status":"offline"}'))
    assert (await spoof.connect())[0] == "Not authorized"
    assert broker.broker.refusals["acl_will"] == 1
    own = PahoClient("nd-ph-1", broker.port, username="nd-ph-1", password=PASSWORD,
                     will=("hydro/gh1/zone-a/nd-ph-1/status", b'{"status":"offline"}'))
    assert (await own.connect())[0] == "Success"
    await own.kill()
    await eventually(lambda: sink.on("hydro/gh1/zone-a/nd-ph-1/status"))
    assert sink.on("hydro/gh1/zone-a/nd-ph-2/status") == []


async def test_the_gateway_acl_needs_no_amqtt_acl_plugin(broker_factory):
    # amqtt's topic_check plugins misbehave (subscribe_acl fails to load, publish_acl alone denies every
    # subscription); the gateway loads none and enforces its own ACL on publish and subscribe.
    broker, sink = await broker_factory(anonymous=False, users=accounts("nd-ph-1"))
    assert broker.broker.plugins_manager.plugins == []  # no auth, ACL or event plugin of amqtt's
    node = PahoClient("nd-ph-1", broker.port, username="nd-ph-1", password=PASSWORD)
    await node.connect()
    assert await node.subscribe("hydro/gh1/zone-a/nd-ph-1/config") == [1]
    assert await node.subscribe("hydro/gh1/zone-a/nd-ph-9/config") == [128]
    await node.publish("hydro/gh1/zone-a/nd-ph-9/telemetry", b"{}")
    await node.publish(TELEMETRY_1, b"{}")
    await eventually(lambda: sink.messages)
    assert [m.topic for m in sink.messages] == [TELEMETRY_1]
    await node.disconnect()


async def test_fifty_nodes_logging_in_at_once_do_not_stall_the_loop(broker_factory):
    users = [Account(f"nd-{i}", password_hash()) for i in range(50)]  # argon2 with the Pi parameters
    broker, _ = await broker_factory(anonymous=False, users=users)
    authenticator = broker.broker.authenticator
    loop = asyncio.get_running_loop()
    names = [u.username for u in users]
    # The nodes are other devices: their burst runs in another process, so they do not share our GIL.
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as devices:
        await loop.run_in_executor(devices, abs, 0)  # the process is up before we measure
        # Full collections of pytest's own heap (every test module, debug-mode tracebacks) take 50+ ms
        # and have nothing to do with the broker; freeze what exists so they only scan new objects.
        gc.freeze()
        try:
            probe = LagProbe()
            assert await loop.run_in_executor(devices, login_burst, broker.port, names, PASSWORD) == [0] * 50
            assert authenticator.verifications == 50  # each password verified once, off the loop
            # The reconnect burst after a Wi-Fi outage: cached, no argon2 at all.
            assert await loop.run_in_executor(devices, login_burst, broker.port, names, PASSWORD) == [0] * 50
            assert authenticator.verifications == 50
            lag = await probe.stop()
        finally:
            gc.unfreeze()
    assert lag < probe.budget, f"event loop stalled {lag * 1000:.0f} ms"


async def test_password_file_logins_in_production_mode(make_settings, tmp_path):
    password_file = tmp_path / "mqtt-passwords"
    password_file.write_text(f"# node credentials\nnd-ph-1:{password_hash()}\n")
    settings = make_settings(gateway={"mode": "production"},
                             broker={"allow_anonymous": False, "password_file": str(password_file)})
    async with run_gateway(settings) as gw:
        anonymous = PahoClient("esp32-aa01", gw.services.broker.port)
        assert (await anonymous.connect())[0] == "Not authorized"
        node = PahoClient("esp32-aa01", gw.services.broker.port, username="nd-ph-1", password=PASSWORD)
        assert (await node.connect())[0] == "Success"
        await node.publish("hydro/node_hello", json.dumps(HELLO).encode())
        row = await eventually(lambda: gw.services.db.fetchone("SELECT uid FROM nodes WHERE hardware_id='esp32-aa01'"))
        assert row["uid"] == "nd-ph-1"
        await node.disconnect()
