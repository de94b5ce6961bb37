"""The web over the simulated greenhouse: documented shapes, pumps and water state, actions, metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

from gateway.sim.demo import DEMO_ADMIN_TOKEN
from tests.conftest import eventually, run_gateway

DASHBOARD = Path(__file__).resolve().parents[3] / "docs" / "grafana-dashboard.json"

BEARER = {"Authorization": f"Bearer {DEMO_ADMIN_TOKEN}"}


def _validator(spec: dict, name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


async def _all_zones_have_readings(c) -> bool:
    zones = (await c.get("/api/zones")).json()["zones"]
    return all(len(z["readings"]) >= 9 for z in zones)


async def test_api_answers_match_the_openapi_document(demo_settings, client):
    async with run_gateway(demo_settings, simulate=True) as gw, client(gw) as c:
        await eventually(lambda: _all_zones_have_readings(c), timeout=15)
        gw.services.simulation.inject("zone-a", "stuck_relay", "drain")  # runs although commanded off
        await eventually(lambda: gw.services.alerts.active(), timeout=10)
        spec = yaml.safe_load((await c.get("/api/openapi.yaml")).text)
        answers = {
            "/api/overview": "Overview",
            "/api/zones/zone-a": "ZoneDetail",
            "/api/zones/zone-a/chart?metric=water_level&range=24h": "Chart",
            "/api/nodes": "Nodes",
            "/api/alerts": "Alerts",
            "/api/status": "Status",
        }
        for path, schema in answers.items():
            body = (await c.get(path)).json()
            validator = _validator(spec, schema)
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
            assert errors == [], path
        overview = (await c.get("/api/overview")).json()
        zone_a = overview["zones"][0]
        assert zone_a["water"]["phase"] == "NORMAL_RECIRC"
        pumps = {p["channel"]: p for p in zone_a["pumps"]}
        assert pumps["a-recirc"]["fail_safe_mode"] == "NC" and pumps["a-drain"]["fail_safe_mode"] == "NO"
        assert pumps["a-drain"]["locked"] and pumps["a-drain"]["lock_codes"] == ["biz_pump_stuck_on"]
        assert pumps["a-drain"]["desired_on"] is False and pumps["a-drain"]["current_a"] > 0.5
        assert zone_a["locked"] and zone_a["lock_codes"] == ["biz_pump_stuck_on"]
        assert not overview["zones"][1]["locked"]


async def test_water_change_started_from_the_api_moves_the_phase(demo_settings, client):
    async with run_gateway(demo_settings, simulate=True) as gw, client(gw) as c:
        await eventually(lambda: _all_zones_have_readings(c), timeout=15)
        started = await c.post("/api/zones/zone-b/water/start", headers=BEARER)
        assert started.status == 202 and started.json()["by"] == "admin (api token)"

        async def phase() -> str:
            return (await c.get("/api/zones/zone-b")).json()["zone"]["water"]["phase"]

        await eventually(lambda: _is(phase, "WATER_CHANGE_DRAIN"), timeout=10)
        # The zone page's "Abort water change" button: a form with the session's CSRF token.
        assert (await c.login(password=DEMO_ADMIN_TOKEN)).status == 303
        page = await c.get("/zones/zone-b")
        assert 'action="/zones/zone-b/water/abort"' in page.text
        aborted = await c.post("/zones/zone-b/water/abort", data={"csrf_token": page.csrf, "next": "/zones/zone-b"})
        assert aborted.status == 303 and aborted.headers["Location"] == "/zones/zone-b"
        assert "Water change aborted" in (await c.get("/zones/zone-b")).text
        await eventually(lambda: _is(phase, "NORMAL_RECIRC"), timeout=10)
        history = (await c.get("/api/zones/zone-b")).json()["water_changes"]
        assert [e["type"] for e in history][:2] == ["WATER_CHANGE_ABORTED", "WATER_CHANGE_STARTED"]
        assert history[0]["details"].get("by") == "admin (web)", history[0]


async def _is(get, expected: str) -> bool:
    return await get() == expected


async def test_metrics_are_fed(demo_settings, client):
    async with run_gateway(demo_settings, simulate=True) as gw, client(gw) as c:
        await eventually(lambda: _all_zones_have_readings(c), timeout=15)
        # A jammed drain pump: the water change starts it, the safety loop trips it on overcurrent.
        gw.services.simulation.inject("zone-a", "jammed", "drain")
        assert (await c.post("/api/zones/zone-a/water/start", headers=BEARER)).status == 202

        async def scraped() -> str:
            text = (await c.get("/metrics")).text
            tripped = 'hydro_safety_trips_total{reason="biz_overcurrent"} 1.0' in text
            # The relay stops in the tick; the alert is recorded right after it.
            alerted = 'hydro_alerts_raised_total{code="biz_overcurrent"} 1.0' in text
            return text if tripped and alerted and _value(text, "hydro_broker_clients") == 8 else ""

        text = await eventually(scraped, timeout=15)
        assert _value(text, "hydro_nodes_online") == 8
        assert _value(text, 'hydro_ingest_samples_total{reason="",result="accepted"}') > 0
        assert _value(text, "hydro_ingest_commit_seconds_count") > 0
        assert _value(text, "hydro_ingest_queue_depth") >= 0 and _value(text, "hydro_router_queue_depth") >= 0
        assert _value(text, "hydro_safety_tick_seconds_count") > 0
        # The recirculation pump (NC, running) accrues runtime; the jammed drain may trip in its very first tick.
        assert _value(text, 'hydro_pump_runtime_seconds_total{channel="a-recirc",zone="zone-a"}') > 0
        assert _value(text, "hydro_process_resident_memory_bytes") > 10_000_000
        assert _value(text, "hydro_db_size_bytes") > 0


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{series} not exported"
    return float(match.group(1))


async def test_metrics_carry_sensor_values_ages_targets_and_pumps(demo_settings, client):
    async with run_gateway(demo_settings, simulate=True) as gw, client(gw) as c:
        await eventually(lambda: _all_zones_have_readings(c), timeout=15)
        text = (await c.get("/metrics")).text
        ph = _value(text, 'hydro_sensor_ph{channel="",node="nd-a-ph",zone="zone-a"}')
        assert 5.0 < ph < 7.5
        assert _value(text, 'hydro_sensor_water_level_percent{channel="",node="nd-a-water",zone="zone-a"}') > 50
        air = 'hydro_sensor_air_temperature_celsius{channel="",node="nd-b-climate",zone="zone-b"}'
        assert 15 < _value(text, air) < 35
        assert 0 <= _value(text, 'hydro_sensor_age_seconds{channel="",metric="ph",node="nd-a-ph",zone="zone-a"}') < 30
        assert _value(text, 'hydro_target_min{metric="ph",zone="zone-a"}') == 5.8
        assert _value(text, 'hydro_target_max{metric="ec",zone="zone-b"}') == 1.6
        pump = 'channel="a-recirc",node="",role="recirc",zone="zone-a"'
        assert _value(text, f"hydro_pump_locked{{{pump}}}") == 0
        assert _value(text, f"hydro_pump_on{{{pump}}}") in (0, 1)
        assert _value(text, f"hydro_pump_current_amperes{{{pump}}}") >= 0
        assert "# TYPE hydro_sensor_ph gauge" in text
        # Every series the shipped Grafana dashboard queries is one the gateway exports.
        dashboard = json.loads(DASHBOARD.read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        queried = {n for e in exprs for n in re.findall(r"\bhydro_[a-z0-9_]+", e)}
        types = re.findall(r"^# TYPE (hydro_[a-z0-9_]+) (\w+)", text, re.MULTILINE)
        # (older prometheus_client versions drop the _total of a counter's TYPE line)
        exported = {n for name, kind in types for n in (name, name + "_total" if kind == "counter" else name)}
        assert len(queried) >= 10 and queried <= exported, queried - exported

        # A stuck drain relay: the lock shows on the pump's series.
        gw.services.simulation.inject("zone-a", "stuck_relay", "drain")
        drain = 'hydro_pump_locked{channel="a-drain",node="",role="drain",zone="zone-a"} 1.0'
        await eventually(lambda: _contains(c, drain), timeout=15)
        gw.services.simulation.clear("zone-a", "stuck_relay", "drain")


async def _contains(c, line: str) -> bool:
    return line in (await c.get("/metrics")).text
