"""Hostile JSON bodies against the real aiohttp server: 400 with a reason, never 500; REST ingest as strict as MQTT."""

from __future__ import annotations

import json
import time

from tests.conftest import eventually, run_gateway
from tests.integration.web.conftest import BEARER

DEEP = "[" * 100_000


async def test_deeply_nested_json_is_a_400_with_the_reason_on_every_json_endpoint(make_settings, client):
    headers = {**BEARER, "Content-Type": "application/json"}
    async with run_gateway(make_settings()) as gw, client(gw) as c:
        for path in ("/api/zones/zone-a/commands", "/ingest/telemetry"):
            for body in (DEEP, '{"a":' * 5000, '{"samples": [' + "[" * 40 + "]" * 40 + "]}"):
                resp = await c.post(path, data=body, headers=headers)
                assert resp.status == 400, (path, resp.status, resp.text[:200])
                assert resp.json()["error"] == "too_deep", resp.text
            # Unclosed quotes (400 KB): the depth scan stays linear (it was quadratic: hours, a stalled loop).
            unclosed = '\\"' * 200_000
            for bad, reason in (("{nope", "malformed_json"), (b"\xff\xfe", "not_utf8"), ('[NaN]', "malformed_json"),
                                (unclosed, "malformed_json")):
                resp = await c.post(path, data=bad, headers=headers)
                assert resp.status == 400, (path, bad, resp.text)
                assert resp.json()["error"] == reason
                assert resp.json()["detail"]
        # Brackets inside strings are text, not nesting: such a command is judged on its fields, not refused as deep.
        cmd = {"channel": "pump_main", "cmd": "set_relay", "params": {"note": "[" * 200}}
        resp = await c.post("/api/zones/zone-a/commands", data=json.dumps(cmd), headers=headers)
        assert resp.status < 500 and resp.json().get("error") != "too_deep", resp.text
        # The server is still fine afterwards.
        assert (await c.get("/healthz")).status == 200


async def test_rest_ingest_is_held_to_the_mqtt_telemetry_schema(make_settings, client, nodes):
    async with run_gateway(make_settings()) as gw, nodes(gw, "nd-ph-1"), client(gw) as c:
        now = time.time()
        good = {"node_uid": "nd-ph-1", "metric_type": "ph", "value": 6.0, "ts": now}

        async def post(body: object) -> tuple[int, dict]:
            resp = await c.post("/ingest/telemetry", json=body, headers=BEARER)
            return resp.status, resp.json()

        status, body = await post({"samples": [{**good, "chanel": "x"}]})
        assert status == 422 and "chanel" in body["detail"], body
        status, body = await post({"samples": [{**good, "channel": "a/b#"}]})
        assert status == 422 and "channel" in body["detail"], body
        status, body = await post({"samples": [good], "extra": 1})
        assert status == 422 and "extra" in body["detail"], body
        status, body = await post({"samples": [good] * 12_000})
        assert status == 413 and body["error"] == "too_many_samples" and "1000" in body["detail"], body
        status, body = await post({"samples": [{**good, "value": "abc"}]})
        assert status == 422 and "value" in body["detail"], body
        # Nothing of the refused bodies was stored; a valid body still is.
        assert gw.services.writer.committed == 0 and gw.services.writer.depth == 0
        status, body = await post({"samples": [good, {**good, "channel": "probe-1"}]})
        assert (status, body) == (200, {"status": "ok", "count": 2})
        await eventually(lambda: gw.services.writer.committed == 2)
