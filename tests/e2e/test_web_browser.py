"""The operator's pages in headless Chromium over the simulated greenhouse.

Each test saves screenshots (desktop and 360 px phone) under artifacts/screenshots/.
"""

from __future__ import annotations

import math
import re
import time

import aiohttp
from playwright.async_api import Page, expect

from gateway.sim.demo import DEMO_ADMIN_TOKEN
from tests.conftest import eventually, run_gateway
from tests.e2e.conftest import DESKTOP, PHONE, new_page, screenshot

LIVE_TEXT = "els => els.map(e => e.innerText)"


async def _ready(gw) -> None:
    """Every simulated node is online and both zones have their readings."""

    async def readings() -> bool:
        rows = await gw.services.db.fetchall("SELECT zone_id, COUNT(*) FROM telemetry_last GROUP BY zone_id")
        return len(rows) == 2 and all(r[1] >= 9 for r in rows)

    await eventually(lambda: sum(n.online for n in gw.services.registry.nodes()) == 8, timeout=15)
    await eventually(readings, timeout=15)


def _normalised(texts: list[str]) -> list[str]:
    """Section text with the moving parts (ages, times, values) blanked: what must not differ is the shape."""
    out = []
    for text in texts:
        text = re.sub(r"\d+ (s|min|h|d)( \d+ (min|h))?", "AGE", text)
        text = re.sub(r"\d+(\.\d+)?", "#", text)
        out.append(" ".join(text.split()))
    return out


async def _script_renders_like_the_server(page: Page) -> None:
    """The first paint is the server's; after a refresh from the JSON API the script's must read the same."""
    await page.reload()
    body = page.locator("body")
    served = await page.eval_on_selector_all("[data-live]", LIVE_TEXT)
    assert await body.get_attribute("data-refreshed") == "0", "the script refreshed before the check"
    await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")  # refresh now, not in 5 s
    # (wait_for_function would need 'unsafe-eval', which the page's Content-Security-Policy forbids)
    await expect(body).not_to_have_attribute("data-refreshed", "0")
    refreshed = await page.eval_on_selector_all("[data-live]", LIVE_TEXT)
    assert _normalised(refreshed) == _normalised(served)


async def test_overview_and_nodes_show_the_simulated_greenhouse(demo_settings, browser):
    async with run_gateway(demo_settings, simulate=True) as gw:
        await _ready(gw)
        base = f"http://127.0.0.1:{gw.web_port}"
        errors: list[str] = []
        page = await new_page(browser, DESKTOP, errors)
        await page.goto(base + "/")
        zones = page.locator("[data-live=zones] article.zone")
        await expect(zones).to_have_count(2)
        lettuce = page.locator("article[data-zone=zone-a]")
        await expect(lettuce.locator("h2")).to_contain_text("Lettuce")
        await expect(page.locator("article[data-zone=zone-b] h2")).to_contain_text("Basil")
        await expect(lettuce.locator(".water")).to_contain_text("NORMAL_RECIRC")
        await expect(lettuce.locator("tr[data-metric=ph] td.value")).to_have_text(re.compile(r"^\d\.\d\d pH$"))
        # Wanted and commanded agree (the recirculation duty cycle decides which of the two).
        await expect(lettuce.locator("tr[data-channel=a-recirc]")).to_contain_text(re.compile(r"(ON / ON|OFF / OFF)"))
        await expect(page.locator("[data-live=gateway]")).to_contain_text("Nodes online8 of 8")
        await _script_renders_like_the_server(page)
        await expect(page.locator("#refreshed")).to_contain_text("Updated")
        await screenshot(page, "overview-desktop")

        await page.goto(base + "/nodes")
        rows = page.locator("[data-live=nodes] tbody tr")
        await expect(rows).to_have_count(8)
        await expect(page.locator("tr.online")).to_have_count(8)
        await expect(page.locator("tr[data-node=nd-a-ph]")).to_contain_text("ASSIGNED_TO_ZONE")
        await expect(page.locator("tr[data-node=nd-a-ph]")).to_contain_text("1.4.2")
        await expect(page.locator("tr[data-node=nd-a-ph]")).to_contain_text("-58 dBm")
        await _script_renders_like_the_server(page)
        await screenshot(page, "nodes-desktop")

        phone = await new_page(browser, PHONE, errors)
        for path, name in (("/", "overview"), ("/nodes", "nodes")):
            await phone.goto(base + path)
            await expect(phone.locator("main h1")).to_be_visible()
            # Nothing wider than the phone: no sideways scrolling on a 360 px screen.
            assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            await screenshot(phone, f"{name}-phone")
        assert errors == []


async def _ingest_history(gw) -> None:
    """A day of pH and water level from the zone's nodes, one sample every 5 minutes, oldest first."""
    now = time.time()
    samples = []
    for i in range(288, 0, -1):
        ts = now - 300 * i
        samples.append({"node_uid": "nd-a-ph", "metric_type": "ph", "value": 6.0 + 0.3 * math.sin(i / 20), "ts": ts})
        samples.append({"node_uid": "nd-a-water", "metric_type": "water_level", "value": 70 + i % 10, "ts": ts})
    headers = {"Authorization": f"Bearer {DEMO_ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{gw.web_port}/ingest/telemetry"
        async with http.post(url, json={"samples": samples}, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
    await eventually(lambda: _history_written(gw))


async def _history_written(gw) -> bool:
    row = await gw.services.db.fetchone("SELECT COUNT(*) FROM telemetry_samples WHERE ts < ?", (time.time() - 3600,))
    return row is not None and row[0] >= 2 * 276


async def test_zone_page_charts_the_last_day_and_week(demo_settings, browser):
    async with run_gateway(demo_settings, simulate=True) as gw:
        await _ready(gw)
        await _ingest_history(gw)
        base = f"http://127.0.0.1:{gw.web_port}"
        errors: list[str] = []
        page = await new_page(browser, DESKTOP, errors)
        await page.goto(base + "/zones/zone-a")
        ph = page.locator("figure[data-metric=ph] svg")
        await expect(ph).to_have_attribute("aria-label", "pH (pH), last 24 hours")
        points = int(await ph.get_attribute("data-points") or 0)
        assert points >= 280
        line = await ph.locator("polyline.avg").first.get_attribute("points")
        assert line is not None and len(line.split()) >= 280
        await expect(page.locator("figure[data-metric=water_level] polyline.avg")).to_have_count(1)
        await expect(page.locator("figure[data-metric=ec] svg")).to_have_attribute("data-points", re.compile(r"^[1-9]"))
        await _script_renders_like_the_server(page)
        await screenshot(page, "zone-24h-desktop")

        await page.get_by_role("link", name="7d", exact=True).click()
        await expect(page).to_have_url(re.compile(r"range=7d$"))
        week = page.locator("figure[data-metric=ph] svg")
        await expect(week).to_have_attribute("aria-label", "pH (pH), last 7 days")
        # Hourly points: the day ingested here on top of the demo's simulated week (one per hour, 7 days).
        assert 160 <= int(await week.get_attribute("data-points") or 0) <= 170
        await screenshot(page, "zone-7d-desktop")

        phone = await new_page(browser, PHONE, errors)
        await phone.goto(base + "/zones/zone-a")
        await expect(phone.locator("figure[data-metric=ph] polyline.avg")).to_have_count(1)
        assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        await screenshot(phone, "zone-phone")
        assert errors == []


async def test_fault_shows_its_alert_and_reset_needs_login(demo_settings, browser):
    async with run_gateway(demo_settings, simulate=True) as gw:
        await _ready(gw)
        base = f"http://127.0.0.1:{gw.web_port}"
        errors: list[str] = []
        page = await new_page(browser, DESKTOP, errors)
        await page.goto(base + "/alerts")
        await expect(page.locator("[data-live=locks]")).to_have_text("No zone is locked.")

        # The drain pump's relay sticks: the pump runs although commanded off; the safety loop locks it.
        gw.services.simulation.inject("zone-a", "stuck_relay", "drain")
        lock = page.locator("[data-live=locks] li[data-zone=zone-a]")
        await expect(lock).to_contain_text("biz_pump_stuck_on", timeout=15_000)  # arrives by the page's own refresh
        active = page.locator("[data-live=alerts][data-path=active] tr[data-code=biz_pump_stuck_on]")
        await expect(active).to_contain_text("Pump stuck ON")
        await expect(active).to_contain_text("zone-a")
        await _script_renders_like_the_server(page)
        await screenshot(page, "alerts-fault-desktop")
        phone = await new_page(browser, PHONE, errors)
        for path, name in (("/alerts", "alerts-phone"), ("/login?next=/alerts", "login-phone")):
            await phone.goto(base + path)
            assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            await screenshot(phone, name)

        # Not logged in: the button is disabled; the login link leads back here, a wrong password does not get through.
        await expect(lock.get_by_role("button", name="Reset safety lock")).to_be_disabled()
        await page.get_by_role("link", name="Log in").click()
        await expect(page).to_have_url(re.compile(r"/login\?next=/alerts$"))
        await page.get_by_label("User").fill("admin")
        await page.get_by_label("Password (admin token)").fill("not-the-token")
        await page.get_by_role("button", name="Log in").click()
        await expect(page.locator("p.error")).to_have_text("Wrong user name or password.")
        await screenshot(page, "login-wrong-desktop")
        assert [a["code"] for a in await gw.services.alerts.active()] == ["biz_pump_stuck_on"]

        await page.get_by_label("Password (admin token)").fill(DEMO_ADMIN_TOKEN)
        await page.get_by_role("button", name="Log in").click()
        await expect(page).to_have_url(base + "/alerts")
        await expect(page.locator(".flash")).to_have_text("Logged in as admin.")

        # The operator fixes the pump, then resets the lock.
        gw.services.simulation.clear("zone-a", "stuck_relay", "drain")
        await page.locator("[data-live=locks] li[data-zone=zone-a]").get_by_role("button").click()
        await expect(page.locator(".flash")).to_have_text("Safety lock reset: biz_pump_stuck_on")
        await expect(page.locator("[data-live=locks]")).to_have_text("No zone is locked.")
        await expect(page.locator("[data-live=alerts][data-path=active]")).to_have_text("No active alerts.")
        resolved = page.locator("[data-live=alerts][data-path=recent] tr[data-code=biz_pump_stuck_on]")
        await expect(resolved).to_contain_text("RESOLVED by admin (web)")
        await screenshot(page, "alerts-reset-desktop")
        events = await gw.services.alerts.events(gw.services.registry.zone_id("zone-a"))
        assert any(e["type"] == "SAFETY_LOCK_RESET" and e["details"]["by"] == "admin (web)" for e in events)

        # Unlocked: the overview shows the zone and its drain pump without a lock.
        await page.goto(base + "/")
        zone_a = page.locator("article[data-zone=zone-a]")
        await expect(zone_a).not_to_have_class(re.compile(r"\blocked\b"))
        await expect(zone_a.locator("tr[data-channel=a-drain]")).to_contain_text("OFF / OFF")
        await expect(zone_a.locator("tr[data-channel=a-drain] .badge")).to_have_count(0)
        assert not any(p["locked"] for p in gw.services.safety.snapshot()["zones"]["zone-a"]["pumps"])
        # The browser reports the 401 of the wrong-password answer; anything else is a fault of the page.
        errors = [e for e in errors if "status of 401" not in e]
        assert errors == []
