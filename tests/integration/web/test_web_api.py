"""The JSON API shows what the pages show: zones with readings and their age, charts, nodes, alerts, commands."""

from __future__ import annotations

import asyncio
import time
from zoneinfo import ZoneInfo

import pytest
import yaml
from openapi_spec_validator import validate

from gateway.automation.aggregate import Aggregator
from gateway.web.routes import build_app
from tests.conftest import ADMIN_TOKEN, eventually, run_gateway

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def _ingest(c, samples) -> None:
    resp = await c.post("/ingest/telemetry", json={"samples": samples}, headers=BEARER)
    assert resp.status == 200, resp.text


async def test_overview_has_zones_readings_with_age_and_marks_stale_ones(make_settings, client, nodes):
    settings = make_settings(safety={"stale_after_s": 0.5})
    async with run_gateway(settings) as gw, nodes(gw, "nd-ph-1", "nd-ph-2"), client(gw) as c:
        now = time.time()
        await _ingest(c, [{"node_uid": "nd-ph-1", "metric_type": "ph", "value": 6.2, "ts": now}])
        await eventually(lambda: gw.services.db.fetchone("SELECT 1 FROM telemetry_last"))
        body = (await c.get("/api/overview")).json()
        zones = {z["uid"]: z for z in body["zones"]}
        assert list(zones) == ["zone-a", "zone-b"]
        [reading] = zones["zone-a"]["readings"]
        assert reading["metric"] == "ph" and reading["value"] == 6.2 and reading["unit"] == "pH"
        assert reading["node_uid"] == "nd-ph-1" and reading["age_s"] < 0.5 and reading["stale"] is False
        assert zones["zone-b"]["readings"] == []
        gateway = body["gateway"]
        assert gateway["id"] == "gw-test" and gateway["nodes"] == {"total": 2, "online": 2}
        assert gateway["broker"]["client_count"] == 2
        assert {cl["client_id"] for cl in gateway["broker"]["clients"]} == {"nd-ph-1", "nd-ph-2"}
        assert gateway["disk"]["total_bytes"] > gateway["disk"]["free_bytes"] > 0 and gateway["db_size_bytes"] > 0
        assert body["sync"]["available"] is False and body["sync"]["streams"] == []  # no upstream configured

        async def stale() -> bool:
            z = (await c.get("/api/zones")).json()["zones"][0]
            return z["readings"][0]["stale"]

        await eventually(stale, timeout=5)
        page = await c.get("/")
        assert 'data-state="stale"' in page.text and "stale</span>" in page.text


async def test_chart_buckets_min_max_avg_over_24h_and_7d(make_settings, client, nodes):
    async with run_gateway(make_settings()) as gw, nodes(gw, "nd-ph-1"), client(gw) as c:
        # Three hours of pH, one sample a minute: 5.8, 6.0, 6.2 repeating (the first bucket averages 5.96).
        start = (time.time() // 3600 - 3) * 3600
        values = [5.8, 6.0, 6.2]
        samples = [
            {"node_uid": "nd-ph-1", "metric_type": "ph", "value": values[i % 3], "ts": start + 60 * i}
            for i in range(180)
        ]
        await _ingest(c, samples)
        await eventually(lambda: _count(gw, 180))
        day = (await c.get("/api/zones/zone-a/chart?metric=ph&range=24h")).json()
        assert day["bucket_s"] == 300 and day["unit"] == "pH" and day["source"] == "telemetry_samples"
        assert len(day["points"]) == 36
        first = day["points"][0]
        assert first == {"t": start, "min": 5.8, "max": 6.2, "avg": pytest.approx(5.96), "count": 5}
        week = (await c.get("/api/zones/zone-a/chart?metric=ph&range=7d")).json()
        assert [p["count"] for p in week["points"]] == [60, 60, 60] and week["bucket_s"] == 3600
        # Once the aggregator has run, the same chart comes from the aggregates (the newest bucket from samples).
        await Aggregator(gw.services.db, gw.services.clock, ZoneInfo("UTC")).run_once()
        day_agg = (await c.get("/api/zones/zone-a/chart?metric=ph&range=24h")).json()
        week_agg = (await c.get("/api/zones/zone-a/chart?metric=ph&range=7d")).json()
        assert day_agg["source"] == "telemetry_agg_1m+telemetry_samples"
        assert week_agg["source"] == "telemetry_agg_1h+telemetry_samples"
        for raw, agg in ((day, day_agg), (week, week_agg)):
            assert [(p["t"], p["min"], p["max"], p["count"]) for p in agg["points"]] == [
                (p["t"], p["min"], p["max"], p["count"]) for p in raw["points"]
            ]
            assert [p["avg"] for p in agg["points"]] == pytest.approx([p["avg"] for p in raw["points"]])
        assert (await c.get("/api/zones/zone-b/chart?metric=ph")).json()["points"] == []
        assert (await c.get("/api/zones/zone-a/chart?metric=orp")).status == 422
        assert (await c.get("/api/zones/zone-a/chart?metric=ph&range=1y")).status == 422
        assert (await c.get("/api/zones/nowhere/chart?metric=ph")).status == 404
        svg = await c.get("/zones/zone-a/charts/ph.svg?range=24h")
        assert svg.status == 200 and svg.headers["Content-Type"].startswith("image/svg+xml")
        assert 'data-points="36"' in svg.text and "<polyline" in svg.text
        empty = await c.get("/zones/zone-b/charts/ph.svg")
        assert "no data in this range" in empty.text
        page = await c.get("/zones/zone-a?range=7d")
        assert page.status == 200 and 'data-metric="ph" data-points="3"' in page.text


async def _count(gw, n: int) -> bool:
    row = await gw.services.db.fetchone("SELECT COUNT(*) FROM telemetry_samples")
    return row is not None and row[0] >= n


async def test_nodes_show_lifecycle_online_firmware_last_seen_and_signal(make_settings, client, nodes):
    async with run_gateway(make_settings()) as gw, nodes(gw, "nd-ph-1", "nd-water-1") as by_uid, client(gw) as c:
        hb = {"uptime_s": 30, "rssi": -61, "free_heap": 120000}
        await asyncio.to_thread(by_uid["nd-ph-1"].publish, "hydro/gh1/zone-a/nd-ph-1/heartbeat", hb)
        await eventually(lambda: gw.services.db.fetchone("SELECT 1 FROM nodes WHERE rssi=-61"))
        listed = {n["uid"]: n for n in (await c.get("/api/nodes")).json()["nodes"]}
        ph = listed["nd-ph-1"]
        assert ph["lifecycle_state"] == "ASSIGNED_TO_ZONE" and ph["zone_uid"] == "zone-a" and ph["online"] is True
        assert ph["firmware_version"] == "1.0.0" and ph["rssi"] == -61 and 0 <= ph["last_seen_age_s"] < 5
        await asyncio.to_thread(
            by_uid["nd-water-1"].publish, "hydro/gh1/zone-a/nd-water-1/status", {"status": "offline"}
        )

        async def offline() -> bool:
            return not {n["uid"]: n for n in (await c.get("/api/nodes")).json()["nodes"]}["nd-water-1"]["online"]

        await eventually(offline)
        page = (await c.get("/nodes")).text
        assert 'data-node="nd-water-1"' in page and ">offline</span>" in page and "-61 dBm" in page
        alerts = (await c.get("/api/alerts")).json()
        assert [(a["code"], a["zone_uid"], a["scope"]) for a in alerts["active"]] == [
            ("infra_node_offline", "zone-a", "nd-water-1")
        ]
        assert alerts["locked_zones"] == []


async def test_commands_are_listed_per_zone(make_settings, client, nodes):
    async with run_gateway(make_settings()) as gw, nodes(gw, "nd-water-1"), client(gw) as c:
        body = {"node_uid": "nd-water-1", "channel": "level", "cmd": "calibrate", "params": {"point": "empty"}}
        sent = await c.post("/api/zones/zone-a/commands", json=body, headers=BEARER)
        assert sent.status == 202
        cmd_id = sent.json()["cmd_id"]
        listed = (await c.get("/api/commands?zone=zone-a")).json()["commands"]
        assert [(x["cmd_id"], x["status"], x["node_uid"]) for x in listed] == [(cmd_id, "SENT", "nd-water-1")]
        assert (await c.get("/api/commands?zone=zone-b")).json()["commands"] == []
        assert (await c.get("/api/commands?zone=nowhere")).status == 404
        assert (await c.get("/api/commands?limit=0")).status == 422
        zone = (await c.get("/api/zones/zone-a")).json()
        assert zone["commands"][0]["cmd_id"] == cmd_id
        assert cmd_id in (await c.get("/zones/zone-a")).text
        assert (await c.get("/api/zones/nowhere")).status == 404


async def test_water_actions_answer_for_zones_without_a_water_cycle(make_settings, client):
    async with run_gateway(make_settings()) as gw, client(gw) as c:
        no_cycle = await c.post("/api/zones/zone-a/water/start", headers=BEARER)
        assert no_cycle.status == 409 and "no water cycle" in no_cycle.json()["error"]
        assert (await c.post("/api/zones/zone-a/water/boil", headers=BEARER)).status == 404
        assert (await c.post("/api/zones/nowhere/water/start", headers=BEARER)).status == 404
        assert (await c.post("/api/zones/zone-a/water/start")).status == 401


async def test_pages_escape_what_they_show_and_send_security_headers(make_settings, client):
    zones = [{"uid": "zone-a", "name": "<script>alert(1)</script>"}]
    async with run_gateway(make_settings(zones=zones, nodes=[])) as gw, client(gw) as c:
        for path in ("/", "/zones/zone-a", "/nodes", "/alerts", "/login"):
            page = await c.get(path)
            assert page.status == 200, path
            assert "<script>alert(1)" not in page.text, path
            csp = page.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (await c.get("/")).text
        missing = await c.get("/zones/nowhere")
        assert missing.status == 404 and "Content-Security-Policy" in missing.headers
        script = await c.get("/static/app.js")
        assert script.status == 200 and "data-live" in script.text


async def test_openapi_document_is_valid_and_covers_every_route(make_settings, client):
    async with run_gateway(make_settings()) as gw, client(gw) as c:
        served = await c.get("/api/openapi.yaml")
        assert served.status == 200
        spec = yaml.safe_load(served.text)
        validate(spec)
        documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if m != "parameters"}
        app = build_app(gw.services.web.services)
        routed = set()
        for route in app.router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            path = info.get("path") or info.get("formatter")
            if route.method in ("HEAD", "*") or path is None:
                continue
            routed.add((route.method, path))
        assert routed == documented
