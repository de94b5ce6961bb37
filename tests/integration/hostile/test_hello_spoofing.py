"""A node that says hello as another node is refused before anything is written (real broker, real paho nodes)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging

from gateway.broker.auth import hash_password
from tests.conftest import eventually, run_gateway
from tests.fakes.paho_node import PahoNode

PASSWORD = "node-secret"
HELLO = {"message_type": "node_hello", "node_type": "ph", "fw_version": "1.0.0"}


@functools.cache
def _hash() -> str:
    return hash_password(PASSWORD)


def _settings(make_settings):
    users = [{"username": u, "password_hash": _hash()} for u in ("nd-ph-1", "nd-ph-2")]
    return make_settings(broker={"allow_anonymous": False, "users": users})


async def _node(gw, uid: str) -> PahoNode:
    node = PahoNode(f"client-{uid}", gw.services.broker.port, username=uid, password=PASSWORD)
    await asyncio.to_thread(node.connect)
    return node


async def _snapshot(gw) -> tuple:
    nodes = [tuple(r) for r in await gw.services.db.fetchall("SELECT * FROM nodes ORDER BY id")]
    outbox = (await gw.services.db.fetchone("SELECT COUNT(*) FROM sync_outbox WHERE stream='node_registrations'"))[0]
    return nodes, outbox


def _rejected(gw, reason: str) -> float:
    return gw.services.metrics.messages_rejected.labels(reason=reason)._value.get()


async def _conflict_alerts(gw) -> list[dict]:
    return [a for a in await gw.services.alerts.active() if a["code"] == "infra_node_identity_conflict"]


async def test_hello_with_another_nodes_identity_is_refused_before_anything_is_written(make_settings):
    async with run_gateway(_settings(make_settings)) as gw:
        victim = await _node(gw, "nd-ph-2")
        evil = await _node(gw, "nd-ph-1")
        try:
            await asyncio.to_thread(victim.publish, "hydro/node_hello", {**HELLO, "hardware_id": "esp32-bb01"})
            await eventually(lambda: gw.services.registry.get("nd-ph-2"))
            await asyncio.to_thread(evil.publish, "hydro/node_hello", {**HELLO, "hardware_id": "esp32-aa01"})
            await eventually(lambda: gw.services.registry.get("nd-ph-1"))
            before = await _snapshot(gw)
            spoofs = [
                # n001's hardware id and uid, as in the issue
                {**HELLO, "hardware_id": "esp32-bb01", "node_uid": "nd-ph-2", "fw_version": "6.6.6-evil",
                 "node_type": "pump"},
                # n001's hardware id alone (the config assigns it to nd-ph-2)
                {**HELLO, "hardware_id": "esp32-bb01", "fw_version": "6.6.6-evil"},
                # its own hardware id but n001's uid
                {**HELLO, "hardware_id": "esp32-aa01", "node_uid": "nd-ph-2"},
            ]
            for spoof in spoofs * 5:
                await asyncio.to_thread(evil.publish, "hydro/node_hello", spoof)
            await eventually(lambda: _rejected(gw, "node_identity_conflict") == 15)
            # Nothing changed: the victim's record, the spoofer's record, nothing queued upstream.
            assert await _snapshot(gw) == before
            victim_row = await gw.services.db.fetchone("SELECT * FROM nodes WHERE uid='nd-ph-2'")
            assert victim_row["firmware_version"] == "1.0.0" and victim_row["node_type"] == "ph"
            # One alert for the account, written once although it was refused 15 times.
            alerts = await _conflict_alerts(gw)
            assert [(a["scope"], a["count"]) for a in alerts] == [("nd-ph-1", 1)]
            assert "nd-ph-2" in alerts[0]["details"]["problem"]
            # The honest node's own hello still works.
            await asyncio.to_thread(victim.publish, "hydro/node_hello", {**HELLO, "hardware_id": "esp32-bb01",
                                                                          "fw_version": "1.0.2"})
            await eventually(lambda: gw.services.db.fetchone(
                "SELECT 1 FROM nodes WHERE uid='nd-ph-2' AND firmware_version='1.0.2'"))
        finally:
            victim.close()
            evil.close()


async def test_two_thousand_hellos_with_new_hardware_ids_are_refused_quietly(make_settings, caplog):
    caplog.set_level(logging.INFO)
    async with run_gateway(_settings(make_settings)) as gw:
        node = await _node(gw, "nd-ph-1")
        try:
            await asyncio.to_thread(node.publish, "hydro/node_hello", {**HELLO, "hardware_id": "esp32-aa01"})
            await eventually(lambda: gw.services.registry.get("nd-ph-1"))
            before = await _snapshot(gw)

            def flood() -> None:
                infos = [
                    node.client.publish("hydro/node_hello", json.dumps({**HELLO, "hardware_id": f"esp32-f{i:05d}"}),
                                        qos=1)
                    for i in range(2000)
                ]
                for info in infos:
                    info.wait_for_publish(30.0)

            await asyncio.to_thread(flood)
            await eventually(lambda: _rejected(gw, "node_identity_conflict") == 2000, timeout=60)
            assert await _snapshot(gw) == before
            assert [a["count"] for a in await _conflict_alerts(gw)] == [1]
        finally:
            node.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors[:3]
    refused = [r for r in caplog.records if "node_identity_conflict" in r.getMessage()]
    assert 1 <= len(refused) <= 2, [r.getMessage() for r in refused[:5]]
