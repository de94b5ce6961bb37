"""PUBACK only after commit, and the node message identity (boot, seq): a re-sent message is stored once.

Real broker, real paho nodes (and a byte-level client where a test needs the DUP flag), real SQLite.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from typing import Any

import aiohttp

from gateway.store.db import Database
from tests.conftest import ADMIN_TOKEN, eventually, run_gateway
from tests.fakes.mqtt_clients import RawClient, publish_packet
from tests.fakes.paho_node import PahoNode

HELLO = {"message_type": "node_hello", "hardware_id": "esp32-aa01", "node_type": "ph", "fw_version": "1.0.0"}
TOPIC = "hydro/gh1/zone-a/nd-ph-1/telemetry"


async def _hello(gw: Any) -> PahoNode:
    node = PahoNode("nd-ph-1", gw.services.broker.port)
    await asyncio.to_thread(node.connect)
    await asyncio.to_thread(node.publish, "hydro/node_hello", HELLO)
    await eventually(lambda: gw.services.registry.get("nd-ph-1"))
    return node


async def _raw_node(port: int) -> RawClient:
    """A byte-level client for the exact PUBLISH (DUP flag, packet id) a test asks for."""
    raw = RawClient(port)
    code, _session = await raw.connect("nd-ph-1")
    assert code == 0, "CONNACK refused"
    return raw


async def _publish_qos1(raw: RawClient, payload: dict[str, Any], pid: int, dup: bool) -> None:
    """PUBLISH at QoS 1 and wait for its PUBACK."""
    raw.send(publish_packet(TOPIC, json.dumps(payload).encode(), qos=1, pid=pid, dup=dup))
    kind, _flags, body = await raw.read_packet(timeout=10)
    assert kind == 4 and struct.unpack("!H", body)[0] == pid, f"expected PUBACK {pid}, got type {kind}"


async def _values(db: Database) -> list[float]:
    return [r[0] for r in await db.fetchall("SELECT value FROM telemetry_samples ORDER BY id")]


async def test_puback_waits_for_the_commit_and_an_invalid_message_is_acknowledged_at_once(make_settings):
    async with run_gateway(make_settings()) as gw:
        node = await _hello(gw)
        # Every insert fails, as on a full disk: nothing can be made durable.
        await gw.services.db.execute("CREATE TEMP TRIGGER full_disk BEFORE INSERT ON telemetry_samples "
                            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        info = node.client.publish(TOPIC, json.dumps({"metric_type": "ph", "value": 6.2}).encode(), qos=1)
        await eventually(lambda: gw.services.writer.last_commit_error is not None)
        # A message the gateway drops as invalid does not wait for the disk: PUBACKed, counted. (Another
        # node: on one connection PUBACKs go out in the order the messages came [MQTT-4.6.0-2].)
        other = PahoNode("nd-ph-2", gw.services.broker.port)
        await asyncio.to_thread(other.connect)
        bad = other.client.publish("hydro/gh1/zone-b/nd-ph-2/telemetry", b'{"metric_type": "ph", "value": "six"}',
                                   qos=1)
        await asyncio.to_thread(bad.wait_for_publish, 10)
        assert bad.is_published()
        other.close()
        assert gw.services.metrics.registry.get_sample_value("hydro_messages_rejected_total", {"reason": "schema"}) == 1
        # The valid one is still unacknowledged: its commit failed (and paho still has it in flight).
        assert not info.is_published()
        assert gw.services.writer.last_commit_error is not None
        await gw.services.db.execute("DROP TRIGGER full_disk")
        await asyncio.to_thread(info.wait_for_publish, 20)
        assert info.is_published()
        # Acknowledged means committed: the row is there the moment the node has its PUBACK.
        assert await _values(gw.services.db) == [6.2]
        node.close()


async def test_a_resent_message_is_stored_once_with_or_without_dup_and_across_a_restart(make_settings):
    settings = make_settings()
    first = {"metric_type": "ph", "value": 6.0, "boot": "b-17", "seq": 0}
    second = {"samples": [{"metric_type": "ph", "value": 6.1}, {"metric_type": "ec", "value": 1.4}],
              "boot": "b-17", "seq": 1}
    async with run_gateway(settings) as gw:
        (await _hello(gw)).close()
        raw = await _raw_node(gw.services.broker.port)
        await _publish_qos1(raw, first, pid=1, dup=False)
        await _publish_qos1(raw, first, pid=1, dup=True)  # PUBACK lost: the client library re-sends
        await _publish_qos1(raw, first, pid=7, dup=False)  # the firmware re-publishes from its buffer
        await _publish_qos1(raw, second, pid=2, dup=False)
        raw.close()
        assert await _values(gw.services.db) == [6.0, 6.1, 1.4]
        dups = gw.services.metrics.registry.get_sample_value
        assert dups("hydro_ingest_duplicates_total", {"reason": "dup_flag"}) == 1
        assert dups("hydro_ingest_duplicates_total", {"reason": "resent"}) == 1
    # A new gateway process (same database) still knows what it committed.
    async with run_gateway(settings) as gw:
        raw = await _raw_node(gw.services.broker.port)
        await _publish_qos1(raw, second, pid=2, dup=True)
        await _publish_qos1(raw, first, pid=3, dup=False)
        await _publish_qos1(raw, {"metric_type": "ph", "value": 6.3, "boot": "b-17", "seq": 2}, pid=4, dup=False)
        # A reboot starts a new numbering: seq 0 of another boot is new.
        await _publish_qos1(raw, {"metric_type": "ph", "value": 6.4, "boot": "b-18", "seq": 0}, pid=5, dup=False)
        # Older firmware, no identity: stored every time, as before.
        await _publish_qos1(raw, {"metric_type": "ph", "value": 6.5}, pid=6, dup=False)
        await _publish_qos1(raw, {"metric_type": "ph", "value": 6.5}, pid=6, dup=True)
        raw.close()
        assert await _values(gw.services.db) == [6.0, 6.1, 1.4, 6.3, 6.4, 6.5, 6.5]
        metrics = gw.services.metrics.registry
        assert metrics.get_sample_value("hydro_ingest_duplicates_total", {"reason": "dup_flag"}) == 1
        assert gw.services.metrics.registry.get_sample_value("hydro_ingest_duplicates_total", {"reason": "resent"}) == 1
        state = await gw.services.db.fetchone("SELECT boot, high, duplicates FROM node_sequences")
        assert tuple(state) == ("b-18", 0, 4)


async def test_sequence_gaps_are_counted_per_node_without_blocking_anything(make_settings):
    async with run_gateway(make_settings()) as gw:
        node = await _hello(gw)
        for seq in (0, 1, 5):  # 2, 3, 4 lost on the node's side (its own buffer overflowed)
            await asyncio.to_thread(node.publish, TOPIC, {"metric_type": "ph", "value": 6.0 + seq / 10,
                                                         "boot": "7", "seq": seq})
        # A heartbeat is numbered in the same sequence; 7 skips 6.
        await asyncio.to_thread(node.publish, "hydro/gh1/zone-a/nd-ph-1/heartbeat",
                                {"uptime_s": 5, "rssi": -60, "free_heap": 1000, "boot": "7", "seq": 7})
        assert len(await _values(gw.services.db)) == 3
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{gw.web_port}/api/nodes") as resp:
                nodes = {n["uid"]: n for n in (await resp.json())["nodes"]}
            async with http.get(f"http://127.0.0.1:{gw.web_port}/nodes") as resp:
                page = await resp.text()
            async with http.get(f"http://127.0.0.1:{gw.web_port}/metrics",
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
                metrics = await resp.text()
        assert nodes["nd-ph-1"]["sequence"] == {"boot": "7", "seq": 7, "gaps": 4, "duplicates": 0}
        assert "4 missing" in page
        assert 'hydro_node_sequence_gaps{node="nd-ph-1"} 4.0' in metrics
        # The heartbeat was applied (not blocked by the gaps) and its number committed with the state.
        assert (await gw.services.db.fetchone("SELECT rssi FROM nodes WHERE uid='nd-ph-1'"))[0] == -60
        # Committed up to 7; 2-4 and 6 still missing (a late re-send would fill them), none given up on.
        row = await gw.services.db.fetchone("SELECT high, holes, gaps FROM node_sequences")
        assert tuple(row) == (7, "[[2,4],[6,6]]", 0)
        node.close()


async def test_http_ingest_answers_after_commit_and_stores_an_identified_sample_once(make_settings):
    async with run_gateway(make_settings()) as gw:
        (await _hello(gw)).close()
        url = f"http://127.0.0.1:{gw.web_port}/ingest/telemetry"
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        now = time.time()
        body = {"samples": [{"node_uid": "nd-ph-1", "metric_type": "ph", "value": v, "ts": now, "boot": "1", "seq": i}
                            for i, v in enumerate((5.8, 5.9))]}
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=body, headers=headers) as resp:
                assert resp.status == 200 and await resp.json() == {"status": "ok", "count": 2}
            assert await _values(gw.services.db) == [5.8, 5.9]  # committed before the answer
            async with http.post(url, json=body, headers=headers) as resp:  # the client retries (lost answer)
                assert resp.status == 200
                assert await resp.json() == {"status": "ok", "count": 0, "duplicates": 2}
        assert await _values(gw.services.db) == [5.8, 5.9]
