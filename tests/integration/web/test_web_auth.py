"""Who may act: reads are open on the LAN, actions need the admin (bearer token, or login + CSRF token),
and wrong credentials are locked out per credential and client IP."""

from __future__ import annotations

import asyncio
import json
import time

from tests.conftest import ADMIN_TOKEN, eventually, run_gateway

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ZONES = [
    {
        "uid": "zone-a",
        "name": "Zone A",
        "actuators": {"irrigation": {"channel": "pump_irrigation", "node_uid": "nd-water-1"}},
    },
    {"uid": "zone-b", "name": "Zone B"},
]


async def trip_overcurrent(gw, node) -> None:
    """The irrigation node answers a pump command with ERROR overcurrent: the zone gets locked."""
    t = "hydro/gh1/zone-a/nd-water-1/telemetry"
    await asyncio.to_thread(node.subscribe, "hydro/gh1/zone-a/nd-water-1/+/command")
    await asyncio.to_thread(node.publish, t, {"metric_type": "water_level", "value": 80, "ts": time.time()})
    await eventually(lambda: gw.services.db.fetchone("SELECT 1 FROM telemetry_last WHERE metric_type='water_level'"))
    record = await gw.services.commands.submit("zone-a", "pump_irrigation", "run_pump", {"duration_s": 5},
                                               node_uid="nd-water-1")
    while True:
        topic, payload, _, _ = await asyncio.to_thread(node.get)
        if topic.endswith("/command"):
            break
    assert json.loads(payload)["cmd_id"] == record["cmd_id"]
    resp = {"cmd": "run_pump", "cmd_id": record["cmd_id"], "status": "ERROR", "error_code": "overcurrent"}
    await asyncio.to_thread(node.publish, "hydro/gh1/zone-a/nd-water-1/pump_irrigation/command_response", resp)
    await eventually(lambda: _active_codes(gw, "biz_overcurrent"))


async def _active_codes(gw, code: str) -> bool:
    return any(a["code"] == code for a in await gw.services.alerts.active())


async def test_reset_needs_admin_and_clears_the_lock(make_settings, client, nodes):
    async with run_gateway(make_settings(zones=ZONES)) as gw, nodes(gw, "nd-water-1") as by_uid:
        await trip_overcurrent(gw, by_uid["nd-water-1"])
        async with client(gw) as c:
            locked = (await c.get("/api/alerts")).json()["locked_zones"]
            assert [(z["zone_uid"], z["lock_codes"]) for z in locked] == [("zone-a", ["biz_overcurrent"])]
            anonymous = await c.post("/api/zones/zone-a/safety/reset")
            assert anonymous.status == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
            assert await _active_codes(gw, "biz_overcurrent"), "an anonymous reset must not resolve anything"
            done = await c.post("/api/zones/zone-a/safety/reset", headers=BEARER)
            assert done.status == 200
            assert done.json() == {"zone": "zone-a", "resolved": ["biz_overcurrent"], "by": "admin (api token)"}
            after = (await c.get("/api/alerts")).json()
            assert after["locked_zones"] == [] and after["active"] == []
            latest = after["recent"][0]
            assert latest["status"] == "RESOLVED" and latest["resolved_by"] == "admin (api token)"
            events = (await c.get("/api/zones/zone-a")).json()["events"]
            reset = next(e for e in events if e["type"] == "SAFETY_LOCK_RESET")
            assert reset["details"]["by"] == "admin (api token)"
            assert (await c.post("/api/zones/nowhere/safety/reset", headers=BEARER)).status == 404


async def test_login_session_and_csrf_guard_actions(make_settings, client):
    async with run_gateway(make_settings()) as gw, client(gw) as c:
        form = await c.get("/login?next=/alerts")
        assert form.status == 200 and 'name="password"' in form.text
        wrong = await c.login(password="guess", next_="/alerts")
        assert wrong.status == 401 and "Wrong user name or password" in wrong.text
        ok = await c.login(next_="/alerts")
        assert ok.status == 303 and ok.headers["Location"] == "/alerts"
        cookie = ok.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        page = await c.get("/alerts")
        assert "Logged in as admin." in page.text and "Log out" in page.text
        csrf = page.csrf
        assert len(csrf) >= 32
        # The cookie alone is not enough: another site could make the browser send it.
        no_token = await c.post("/api/zones/zone-a/safety/reset")
        assert no_token.status == 403 and "CSRF" in no_token.json()["error"]
        bad_token = await c.post("/api/zones/zone-a/safety/reset", headers={"X-CSRF-Token": "x" * 43})
        assert bad_token.status == 403
        cross_site = await c.post(
            "/api/zones/zone-a/safety/reset", headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        )
        assert cross_site.status == 403
        good = await c.post("/api/zones/zone-a/safety/reset", headers={"X-CSRF-Token": csrf})
        assert good.status == 200 and good.json()["by"] == "admin (web)"
        # The HTML form path: hidden csrf_token field, back to the page with a message.
        posted = await c.post("/zones/zone-a/safety/reset", data={"csrf_token": csrf, "next": "/alerts"})
        assert posted.status == 303 and posted.headers["Location"] == "/alerts"
        assert "Safety lock reset: nothing was locked" in (await c.get("/alerts")).text
        # Logging out needs the token too, then the session is gone for good.
        assert (await c.post("/logout", data={"csrf_token": "nope"})).status == 403
        out = await c.post("/logout", data={"csrf_token": csrf})
        assert out.status == 303
        assert (await c.post("/api/zones/zone-a/safety/reset", headers={"X-CSRF-Token": csrf})).status == 401


async def test_form_action_without_login_returns_to_the_page_with_the_action_not_done(make_settings, client):
    async with run_gateway(make_settings()) as gw, client(gw) as c:
        resp = await c.post("/zones/zone-a/safety/reset", data={"csrf_token": "", "next": "/alerts"})
        assert resp.status == 303 and resp.headers["Location"] == "/alerts?login=expired"
        back = await c.get("/alerts?login=expired")
        assert "the action was NOT performed" in back.text
        form = {"channel": "x", "action": "stop", "next": "/zones/zone-a?range=7d"}
        manual = await c.post("/zones/zone-a/manual", data=form)
        assert manual.status == 303 and manual.headers["Location"] == "/zones/zone-a?range=7d&login=expired"
        assert await gw.services.db.fetchone("SELECT 1 FROM commands") is None
        # A login never redirects to another site.
        away = await c.login(next_="//evil.example/x")
        assert away.status == 303 and away.headers["Location"] == "/"


async def test_wrong_credentials_are_locked_out_per_credential_and_ip(make_settings, client):
    async with run_gateway(make_settings()) as gw:
        async with client(gw) as c:
            for _ in range(5):
                r = await c.post("/api/zones/zone-a/safety/reset", headers={"Authorization": "Bearer wrong"})
                assert r.status == 401
            # The same wrong token from this IP now waits ...
            limited = await c.post("/api/zones/zone-a/safety/reset", headers={"Authorization": "Bearer wrong"})
            assert limited.status == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
            # ... but the technician who mistyped is not locked out with the right token, nor from logging in.
            assert (await c.post("/api/zones/zone-a/safety/reset", headers=BEARER)).status == 200
            assert (await c.login()).status == 303
            # The wrong token is still locked out after the right one succeeded.
            again = await c.post("/api/zones/zone-a/safety/reset", headers={"Authorization": "Bearer wrong"})
            assert again.status == 429
            metrics = (await c.get("/metrics")).text
            assert "hydro_web_lockouts_total 1.0" in metrics
            assert "hydro_web_locked_out 1.0" in metrics
            assert 'hydro_web_auth_failures_total{via="token"} 5.0' in metrics
            assert "hydro_web_locked_out_refusals_total 2.0" in metrics
        async with client(gw, source_ip="127.0.0.2") as other:
            # The lockout is per IP too: the same wrong token from elsewhere is judged afresh (401, not 429).
            r = await other.post("/api/zones/zone-a/safety/reset", headers={"Authorization": "Bearer wrong"})
            assert r.status == 401


async def test_login_form_failures_count_too(make_settings, client):
    async with run_gateway(make_settings()) as gw, client(gw) as c:
        for _ in range(5):
            assert (await c.login(password="guess")).status == 401
        assert (await c.login(password="guess")).status == 429
        assert (await c.login()).status == 303  # the right password was never the one mistyped


async def test_without_public_read_everything_but_health_needs_login(make_settings, client):
    async with run_gateway(make_settings(web={"public_read": False})) as gw, client(gw) as c:
        assert (await c.get("/healthz")).status == 200
        page = await c.get("/nodes")
        assert page.status == 303 and page.headers["Location"] == "/login?next=/nodes"
        for path in ("/api/overview", "/api/nodes", "/api/alerts", "/metrics", "/api/zones/zone-a/chart?metric=ph"):
            assert (await c.get(path)).status == 401, path
        assert (await c.get("/api/overview", headers=BEARER)).status == 200
        assert (await c.login(next_="/nodes")).headers["Location"] == "/nodes"
        assert (await c.get("/nodes")).status == 200
        assert (await c.get("/api/overview")).status == 200
