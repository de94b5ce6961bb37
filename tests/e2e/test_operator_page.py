"""The operator's page in headless Chromium on a fresh demo: targets, history, safe actions, manual control.

Screenshots of the fresh demo (overview and zone page, desktop and 360 px phone) go to artifacts/screenshots/;
the ones in docs/screenshots/ are copies of these.
"""

from __future__ import annotations

import re

import aiohttp
from playwright.async_api import Dialog, Page, expect

from gateway.sim.demo import DEMO_ADMIN_TOKEN
from tests.conftest import eventually, run_gateway
from tests.e2e.conftest import DESKTOP, PHONE, new_page, screenshot

RED = "rgb(185, 28, 28)"
GREEN = "rgb(4, 120, 87)"


async def _ready(gw) -> None:
    async def readings() -> bool:
        rows = await gw.services.db.fetchall("SELECT zone_id, COUNT(*) FROM telemetry_last GROUP BY zone_id")
        return len(rows) == 2 and all(r[1] >= 9 for r in rows)

    await eventually(lambda: sum(n.online for n in gw.services.registry.nodes()) == 8, timeout=15)
    await eventually(readings, timeout=15)


async def _login(page: Page, base: str, next_path: str) -> None:
    await page.goto(f"{base}/login?next={next_path}")
    await page.get_by_label("User").fill("admin")
    await page.get_by_label("Password (admin token)").fill(DEMO_ADMIN_TOKEN)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator(".flash")).to_have_text("Logged in as admin.")


async def _refresh_now(page: Page) -> None:
    """Ask the page script for an update now instead of in 5 s, and wait until it has one."""
    before = await page.locator("body").get_attribute("data-refreshed")
    await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    await expect(page.locator("body")).not_to_have_attribute("data-refreshed", before or "0")


async def test_fresh_demo_shows_history_targets_and_plan(demo_settings, browser):
    async with run_gateway(demo_settings, simulate=True) as gw:
        await _ready(gw)
        base = f"http://127.0.0.1:{gw.web_port}"
        errors: list[str] = []
        page = await new_page(browser, DESKTOP, errors)
        await page.goto(base + "/")
        await expect(page.locator("p.simulated")).to_contain_text("is simulated history")
        ph = page.locator("article[data-zone=zone-a] tr[data-metric=ph]")
        await expect(ph.locator("td.target")).to_contain_text("5.80–6.20")
        await screenshot(page, "fresh-overview-desktop")

        await page.goto(base + "/zones/zone-a")
        # The first look already has a week of curves: the 24 h pH chart is filled, not a sliver at the edge.
        chart = page.locator("figure[data-metric=ph] svg")
        assert int(await chart.get_attribute("data-points") or 0) >= 250
        band = chart.locator("rect.target")
        await expect(band).to_have_attribute("data-low", "5.8")
        await expect(band).to_have_attribute("data-high", "6.2")
        await expect(page.locator("figure[data-metric=ph] figcaption")).to_contain_text("target 5.80–6.20")
        await expect(page.locator("figure[data-metric=temp_air] rect.target")).to_have_count(0)
        history = page.locator("[data-live=events][data-path=water_changes]")
        await expect(history).to_contain_text("Water change completed in")
        await expect(history).to_contain_text("(simulated)")
        events = page.locator("[data-live=events][data-path=events]")
        await expect(events).to_contain_text("Dosed")
        dose = events.locator("tr[data-type=DOSE]").first
        await expect(dose).to_contain_text(re.compile(r"mL of pH down|nutrient A"))
        assert "=" not in await events.inner_text(), "events read as sentences, not key=value"
        # The plan: recipe, phase day N (of M), next irrigation and water change, dosing.
        plan = page.locator("[data-plan]")
        recipe = re.compile(r"Lettuce NFT · day \d+ · phase growth")
        await expect(plan.locator("[data-item=recipe]")).to_contain_text(recipe)
        await expect(plan.locator("[data-item=targets]")).to_contain_text("pH 5.80–6.20")
        local_time = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d for")
        await expect(plan.locator("[data-item=irrigation]")).to_contain_text(local_time)
        await expect(plan.locator("[data-item=water-change]")).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d 09:00"))
        await expect(plan.locator("[data-item=dosing]")).to_contain_text("PH")
        await screenshot(page, "fresh-zone-desktop")

        # In range is green; a refill-like pH 7.0 / EC 0.6 turns red with "too high" / "too low".
        ph_row = page.locator("article[data-zone=zone-a] tr[data-metric=ph]")
        await expect(ph_row).to_have_attribute("data-state", re.compile(r"^(ok|low|high)$"))
        tank = gw.services.simulation.zones["zone-a"].tank
        tank.ph, tank.ec = 7.0, 0.6
        await _refresh_now(page)
        await expect(ph_row).to_have_attribute("data-state", "high", timeout=15_000)
        await expect(ph_row.locator("td.target")).to_contain_text("too high")
        await expect(ph_row.locator("td.value")).to_have_css("color", RED)
        ec_row = page.locator("article[data-zone=zone-a] tr[data-metric=ec]")
        await expect(ec_row).to_have_attribute("data-state", "low", timeout=15_000)
        await expect(ec_row.locator("td.target")).to_contain_text("too low")
        level = page.locator("article[data-zone=zone-a] tr[data-metric=water_level]")
        await expect(level).to_have_attribute("data-state", "ok")
        await expect(level.locator("td.value")).to_have_css("color", GREEN)

        # Ranges: 1 h, 24 h, 7 d.
        await page.get_by_role("link", name="1h", exact=True).click()
        await expect(page.locator("figure[data-metric=ph] svg")).to_have_attribute("aria-label", "pH (pH), last hour")
        await page.get_by_role("link", name="7d", exact=True).click()
        week = page.locator("figure[data-metric=ph] svg")
        await expect(week).to_have_attribute("aria-label", "pH (pH), last 7 days")
        assert int(await week.get_attribute("data-points") or 0) >= 160
        # Under the charts, pump activity: the simulated week's recirculation, the water change's drain and fill,
        # and the doses.
        strip = page.locator("figure[data-activity] svg")
        await expect(strip).to_have_attribute("aria-label", "Pump activity and doses, last 7 days")
        for channel in ("a-recirc", "a-drain", "a-fill"):
            await expect(strip.locator(f"rect.run[data-channel={channel}]").first).to_be_attached()
        assert await strip.locator("line.dose").count() >= 10

        phone = await new_page(browser, PHONE, errors)
        for path, name in (("/", "fresh-overview-phone"), ("/zones/zone-a", "fresh-zone-phone")):
            await phone.goto(base + path)
            await expect(phone.locator("p.simulated")).to_be_visible()
            assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            await screenshot(phone, name)
        assert errors == []


async def test_water_actions_are_state_aware_confirmed_and_need_a_live_login(demo_settings, browser):
    async with run_gateway(demo_settings, simulate=True) as gw:
        await _ready(gw)
        base = f"http://127.0.0.1:{gw.web_port}"
        errors: list[str] = []
        page = await new_page(browser, DESKTOP, errors)
        await page.goto(base + "/zones/zone-a")
        # Anonymous: every action is visible but disabled, with the way to log in.
        for name in ("Start water change", "Abort water change", "Acknowledge failure", "Dose once"):
            await expect(page.get_by_role("button", name=name).first).to_be_disabled()
        await expect(page.locator("tr[data-manual=a-drain]").get_by_role("button", name="Run")).to_be_disabled()
        await expect(page.locator(".needs-login")).to_contain_text("log in")

        # A form posted without a login (a stale tab, a script) comes back to the page with the action NOT done.
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/zones/zone-a/water/start", data={"next": "/zones/zone-a"},
                                 allow_redirects=False) as resp:
                assert resp.status == 303
                assert resp.headers["Location"] == "/zones/zone-a?login=expired"
        assert gw.services.water.snapshot()["zone-a"]["phase"] == "NORMAL_RECIRC"

        await _login(page, base, "/zones/zone-a")
        start = page.get_by_role("button", name="Start water change")
        abort = page.get_by_role("button", name="Abort water change")
        await expect(start).to_be_enabled()
        await expect(abort).to_be_disabled()  # nothing to abort in NORMAL_RECIRC
        await expect(page.get_by_role("button", name="Acknowledge failure")).to_be_disabled()

        # The confirmation says what will happen; cancelling does nothing.
        seen: list[str] = []

        async def dismiss(d: Dialog) -> None:
            seen.append(d.message)
            await d.dismiss()

        page.once("dialog", dismiss)
        await start.click()
        await expect(start).to_be_enabled()
        assert seen and "drain pump empties the tank" in seen[0] and "fill pump refills it" in seen[0]
        assert gw.services.water.snapshot()["zone-a"]["phase"] == "NORMAL_RECIRC"
        await screenshot(page, "zone-admin-desktop")

        page.once("dialog", lambda d: d.accept())
        await start.click()
        await expect(page.locator(".flash")).to_have_text("Water change started")
        await eventually(lambda: gw.services.water.snapshot()["zone-a"]["phase"] == "WATER_CHANGE_DRAIN", timeout=15)
        await _refresh_now(page)
        water = page.locator("article[data-zone=zone-a] .water")
        await expect(water).to_contain_text("WATER_CHANGE_DRAIN")
        await expect(water).to_contain_text("solution being replaced")
        await expect(water).not_to_contain_text("old")
        await expect(start).to_be_disabled()
        await expect(abort).to_be_enabled()

        # The login expires while the page is open: the abort is not done, the page says so.
        await page.context.clear_cookies()
        page.once("dialog", lambda d: d.accept())
        await abort.click()
        await expect(page).to_have_url(base + "/zones/zone-a?login=expired")
        await expect(page.locator(".flash.bad")).to_contain_text("the action was NOT performed")
        await screenshot(page, "zone-login-expired-desktop")
        assert gw.services.water.snapshot()["zone-a"]["phase"] in ("WATER_CHANGE_DRAIN", "WATER_CHANGE_FILL")

        await _login(page, base, "/zones/zone-a")
        page.once("dialog", lambda d: d.accept())
        await page.get_by_role("button", name="Abort water change").click()
        await expect(page.locator(".flash")).to_have_text("Water change aborted")
        events = await gw.services.alerts.events(gw.services.registry.zone_id("zone-a"))
        assert any(e["type"] == "WATER_CHANGE_STARTED" and e["details"].get("by") == "admin (web)" for e in events)
        assert errors == [] or all("status of 401" in e for e in errors)


async def test_manual_control_goes_through_the_interlock(demo_settings, browser):
    async with run_gateway(demo_settings, simulate=True) as gw:
        await _ready(gw)
        base = f"http://127.0.0.1:{gw.web_port}"
        errors: list[str] = []
        page = await new_page(browser, DESKTOP, errors)
        await _login(page, base, "/zones/zone-a")

        # A bounded manual run of the recirculation pump: confirmed, sent as a run_pump command from the web.
        recirc = page.locator("tr[data-manual=a-recirc]")
        await recirc.get_by_label("Run time of a-recirc in seconds").fill("45")
        messages: list[str] = []

        async def accept(d: Dialog) -> None:
            messages.append(d.message)
            await d.accept()

        page.once("dialog", accept)
        await recirc.get_by_role("button", name="Run").click()
        await expect(page.locator(".flash")).to_contain_text("Manual run of a-recirc for 45 s sent")
        assert "for 45 s" in messages[0] and "switches off by itself" in messages[0]
        row = await gw.services.db.fetchone("SELECT cmd, params, source, status FROM commands ORDER BY id DESC LIMIT 1")
        assert row["cmd"] == "run_pump" and '"duration_s": 45' in row["params"] and row["source"] == "web"

        # One dose of pH down to the doser node.
        doser = page.locator("tr[data-manual=ph_down]")
        await doser.get_by_label("Dose of pH down in mL").fill("1.5")
        page.once("dialog", accept)
        await doser.get_by_role("button", name="Dose once").click()
        await expect(page.locator(".flash")).to_contain_text("Manual dose of 1.5 mL on ph_down sent")
        assert "Dose 1.5 mL of pH down" in messages[-1]

        # The drain relay sticks: the safety loop locks the pump. A manual start is refused, with the reason.
        gw.services.simulation.inject("zone-a", "stuck_relay", "drain")
        await eventually(lambda: any(p["locked"] for p in gw.services.safety.snapshot()["zones"]["zone-a"]["pumps"]
                                     if p["channel"] == "a-drain"), timeout=15)
        await page.reload()
        drain = page.locator("tr[data-manual=a-drain]")
        await expect(drain).to_contain_text("locked: biz_pump_stuck_on")
        # A locked zone cannot start a water change: the button says so by being disabled.
        await expect(page.get_by_role("button", name="Start water change")).to_be_disabled()
        page.once("dialog", accept)
        await drain.get_by_role("button", name="Run").click()
        flash = page.locator(".flash.bad")
        await expect(flash).to_contain_text("Refused by the safety interlock: manual run of a-drain for 60 s not done")
        await expect(flash).to_contain_text("locked by the safety loop (biz_pump_stuck_on)")
        await screenshot(page, "zone-manual-refused-desktop")
        row = await gw.services.db.fetchone("SELECT cmd, status, error_code FROM commands ORDER BY id DESC LIMIT 1")
        assert (row["cmd"], row["status"], row["error_code"]) == ("run_pump", "FAILED", "interlock")

        # Stop is never refused (the safe direction) and needs no confirmation.
        await page.locator("tr[data-manual=a-recirc]").get_by_role("button", name="Stop").click()
        await expect(page.locator(".flash")).to_contain_text("Manual stop of a-recirc sent")
        gw.services.simulation.clear("zone-a", "stuck_relay", "drain")
        assert errors == []
