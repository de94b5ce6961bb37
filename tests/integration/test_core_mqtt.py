"""The gateway core over a real broker with real MQTT clients."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import aiohttp
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import ADMIN_TOKEN, eventually, run_gateway
from tests.fakes.paho_node import PahoNode, release_sockets

HELLO = {
    "message_type": "node_hello",
    "hardware_id": "esp32-aa01",
    "node_type": "ph",
    "fw_version": "1.0.0",
    "hardware_revision": "rev-a",
}


async def test_hello_in_first_milliseconds_is_registered(make_settings):
    settings = make_settings()
    port = settings.broker.port
    published_at: list[float] = []

    def eager_node() -> None:
        # Hammer the port until it opens, then publish node_hello immediately.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="eager")
            try:
                c.connect("127.0.0.1", port, keepalive=30)
            except OSError:
                time.sleep(0.001)
                continue
            c.loop_start()
            info = c.publish("hydro/node_hello", json.dumps(HELLO).encode(), qos=1)
            published_at.append(time.monotonic())
            info.wait_for_publish(5)
            c.disconnect()
            c.loop_stop()
            release_sockets(c)
            return

    thread = threading.Thread(target=eager_node)
    thread.start()
    async with run_gateway(settings) as gw:
        await asyncio.to_thread(thread.join, 20)
        assert published_at, "node never connected"
        row = await eventually(lambda: gw.services.db.fetchone("SELECT * FROM nodes WHERE hardware_id='esp32-aa01'"))
        assert row["uid"] == "nd-ph-1"
        assert row["lifecycle_state"] == "ASSIGNED_TO_ZONE"
        assert row["firmware_version"] == "1.0.0" and row["hardware_revision"] == "rev-a"
        assert row["validated"] == 1 and row["first_seen_at"] is not None


async def test_hello_answers_with_retained_config_and_telemetry_lands(make_settings):
    async with run_gateway(make_settings()) as gw:
        node = PahoNode("nd-ph-1", gw.services.broker.port)
        await asyncio.to_thread(node.connect)
        await asyncio.to_thread(node.subscribe, "hydro/gh1/zone-a/nd-ph-1/config")
        await asyncio.to_thread(node.publish, "hydro/node_hello", HELLO)
        topic, payload, retained, _ = await asyncio.to_thread(node.get)
        assert topic == "hydro/gh1/zone-a/nd-ph-1/config"
        assert json.loads(payload)["zone_uid"] == "zone-a"
        batch = [
            {"metric_type": " PH ", "value": 6.1, "ts": time.time()},
            {"metric_type": "ec", "value": 1.8, "ts": time.time()},
        ]
        await asyncio.to_thread(node.publish, "hydro/gh1/zone-a/nd-ph-1/telemetry", batch)
        rows = await eventually(lambda: gw.services.db.fetchall("SELECT * FROM telemetry_samples ORDER BY id"))
        assert [(r["metric_type"], r["value"]) for r in rows] == [("ph", 6.1), ("ec", 1.8)]
        last = await gw.services.db.fetchall("SELECT metric_type, value FROM telemetry_last ORDER BY metric_type")
        assert [(r[0], r[1]) for r in last] == [("ec", 1.8), ("ph", 6.1)]
        # A late subscriber still gets the retained config.
        late = PahoNode("nd-ph-1-late", gw.services.broker.port)
        await asyncio.to_thread(late.connect)
        await asyncio.to_thread(late.subscribe, "hydro/gh1/zone-a/nd-ph-1/config")
        topic, _, retained, _ = await asyncio.to_thread(late.get)
        assert retained and topic.endswith("/config")
        node.close()
        late.close()


async def test_bad_input_is_counted_and_ingest_keeps_going(make_settings):
    async with run_gateway(make_settings()) as gw:
        node = PahoNode("nd-ph-1", gw.services.broker.port)
        await asyncio.to_thread(node.connect)
        await asyncio.to_thread(node.publish, "hydro/node_hello", HELLO)
        await eventually(lambda: gw.services.registry.get("nd-ph-1"))
        t = "hydro/gh1/zone-a/nd-ph-1/telemetry"
        await asyncio.to_thread(node.publish, t, b"{not json")
        await asyncio.to_thread(node.publish, t, {"metric_type": "ph"})  # schema: no value
        await asyncio.to_thread(node.publish, t, b'{"metric_type":"ph","value":NaN,"ts":1}')
        await asyncio.to_thread(node.publish, t, b"x" * 70_000)
        await asyncio.to_thread(node.publish, "hydro/gh1/zone-a/nd-ghost/telemetry", {"metric_type": "ph", "value": 6})
        await asyncio.to_thread(node.publish, "hydro/gh1/zone-a/nd-ph-1/oops", {"a": 1})
        await asyncio.to_thread(node.publish, t, {"metric_type": "orp", "value": 200})
        await asyncio.to_thread(node.publish, t, {"metric_type": "ph", "value": 19})
        await asyncio.to_thread(node.publish, t, {"metric_type": "ph", "value": 6.5, "ts": time.time()})
        await eventually(lambda: gw.services.db.fetchone("SELECT * FROM telemetry_samples WHERE value=6.5"))
        text = await _metrics_text(gw)
        for reason in ("malformed_json", "schema", "non_finite_number", "oversize", "bad_topic"):
            assert f'hydro_messages_rejected_total{{reason="{reason}"}} 1.0' in text, reason
        assert 'hydro_ingest_samples_total{reason="unknown_node",result="rejected"} 1.0' in text
        assert 'hydro_ingest_samples_total{reason="unknown_metric",result="rejected"} 1.0' in text
        assert 'hydro_ingest_samples_total{reason="out_of_range",result="rejected"} 1.0' in text
        alerts = await gw.services.alerts.active()
        assert [(a["code"], a["details"]["metric_type"]) for a in alerts] == [("unknown_metric", "orp")]
        assert (await gw.services.db.fetchone("SELECT COUNT(*) FROM telemetry_samples"))[0] == 1
        node.close()


async def test_rest_ingest_shares_the_path_and_needs_the_token(make_settings):
    async with run_gateway(make_settings()) as gw:
        node = PahoNode("nd-ph-1", gw.services.broker.port)
        await asyncio.to_thread(node.connect)
        await asyncio.to_thread(node.publish, "hydro/node_hello", HELLO)
        await eventually(lambda: gw.services.registry.get("nd-ph-1"))
        url = f"http://127.0.0.1:{gw.web_port}/ingest/telemetry"
        body = {"samples": [{"node_uid": "nd-ph-1", "metric_type": "ph", "value": 5.9, "ts": time.time()}]}
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=body) as resp:
                assert resp.status == 401
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with http.post(url, json=body, headers=headers) as resp:
                assert resp.status == 200
                assert await resp.json() == {"status": "ok", "count": 1}
            # 2xx only after the commit: the sample is in SQLite by the time the client has its answer.
            assert await gw.services.db.fetchone("SELECT * FROM telemetry_samples WHERE value=5.9") is not None
            bad = {"samples": [{"node_uid": "nd-ph-1", "metric_type": "ph", "value": "abc"}]}
            async with http.post(url, json=bad, headers=headers) as resp:
                assert resp.status == 422
                assert (await resp.json())["rejected"][0]["reason"] == "schema"  # the MQTT telemetry schema
            async with http.get(f"http://127.0.0.1:{gw.web_port}/api/status") as resp:
                status = await resp.json()
                assert status["gateway_id"] == "gw-test" and status["nodes"]["total"] == 1
        node.close()


async def test_last_will_marks_node_offline_and_heartbeat_brings_it_back(make_settings):
    async with run_gateway(make_settings()) as gw:
        status_topic = "hydro/gh1/zone-a/nd-ph-1/status"
        node = PahoNode("nd-ph-1", gw.services.broker.port, keepalive=1, will=(status_topic, b'{"status":"offline"}'))
        await asyncio.to_thread(node.connect)
        await asyncio.to_thread(node.publish, "hydro/node_hello", HELLO)
        await eventually(lambda: gw.services.registry.get("nd-ph-1"))
        node.kill()
        await eventually(lambda: not gw.services.registry.get("nd-ph-1").online, timeout=15)
        alerts = await gw.services.alerts.active()
        assert [a["code"] for a in alerts] == ["infra_node_offline"]
        back = PahoNode("nd-ph-1", gw.services.broker.port)
        await asyncio.to_thread(back.connect)
        await asyncio.to_thread(
            back.publish, "hydro/gh1/zone-a/nd-ph-1/heartbeat", {"uptime_s": 3, "rssi": -60, "free_heap": 100000}
        )
        await eventually(lambda: gw.services.registry.get("nd-ph-1").online)
        assert await gw.services.alerts.active() == []
        back.close()


async def _metrics_text(gw) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{gw.web_port}/metrics") as resp:
            return await resp.text()


async def test_crashed_service_ends_the_gateway_with_an_alert(make_settings):
    import pytest

    from gateway.app import ServiceCrashed
    from gateway.compose import build_gateway

    settings = make_settings()
    gw = await build_gateway(settings)

    async def broken() -> None:
        await asyncio.sleep(0.2)
        raise RuntimeError("boom")

    gw.add_service("broken", broken)
    with pytest.raises(ExceptionGroup) as info:
        await asyncio.wait_for(gw.run(), 10)
    assert info.group_contains(ServiceCrashed)
    async with run_gateway(settings) as again:
        rows = await eventually(lambda: again.services.db.fetchall(
            "SELECT code, status, resolved_by FROM alerts WHERE status='RESOLVED'"))
        assert [tuple(r) for r in rows] == [("infra_service_down_broken", "RESOLVED", "restart")]


async def test_broker_listener_down_raises_infra_mqtt_down(make_settings):
    async with run_gateway(make_settings()) as gw:
        await gw.services.housekeeping.probe_broker()
        assert await gw.services.alerts.active() == []
        server = gw.services.broker.broker._servers["default"].instance
        server.close()
        await server.wait_closed()
        await gw.services.housekeeping.probe_broker()
        assert [a["code"] for a in await gw.services.alerts.active()] == ["infra_mqtt_down"]
