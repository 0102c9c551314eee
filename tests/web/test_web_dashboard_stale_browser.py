"""The dashboard when its data goes old, with keyboard focus, and on a phone: in a real headless
Chromium (Debian package), as tests/web/test_web_dashboard_browser.py.

QA: with the store damaged (503) or the gateway down, the page kept every device green "ok" with only
a small grey "could not load data" instead of "updated …"; the 30-second refresh threw keyboard focus
back to <body>; at 375 px the page scrolled sideways (the fleet table spilled out)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from contextlib import closing
from urllib.parse import urlsplit
from pathlib import Path
from typing import Any, cast

import pytest

from .support import ADMIN_TOKEN, NOW, Fleet
from .test_web_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, pytestmark  # noqa: F401 (same markers)
from gateway.resources import load_policy
from gateway.web.app import create_app, start_http


def damage(db: Path) -> None:
    """What QA did to a live store: overwrite pages from the third on with random bytes. The file change
    store is then written to, as QA's gateway was ingesting."""
    with open(db, "r+b") as f:
        header = f.read(100)
        page_size = int.from_bytes(header[16:18], "big") or 65536
        pages = os.path.getsize(db) // page_size
        assert pages > 2, pages
        f.seek(2 * page_size)
        f.write(os.urandom((pages - 2) * page_size))
    # A commit by another connection, as the ingest's next report: the readers drop their page cache
    # and read the damaged pages.
    with closing(sqlite3.connect(db)) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA user_version = {int(version)}")
        conn.commit()


async def test_old_data_is_flagged_kept_focus_and_no_sideways_scroll(fleet: Fleet, repo_root: Path) -> None:
    from playwright.async_api import async_playwright, expect

    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    port = urlsplit(server.url).port
    stopped = False
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                # A phone: nothing wider than the screen, the fleet table scrolls in its own box.
                phone = await browser.new_page(viewport={"width": 375, "height": 800})
                for path in ("/", "/transparency"):
                    await phone.goto(server.url + path, wait_until="load")
                    if path == "/":
                        await phone.wait_for_selector("body[data-ready='1']", timeout=15000)
                    widths = await phone.evaluate(
                        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
                    assert widths[0] <= widths[1], (path, widths)
                    await phone.screenshot(path=str(repo_root / "artifacts" / f"phone{path.replace('/', '-')}.png"),
                                           full_page=True)
                await phone.close()

                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                await page.goto(server.url + "/", wait_until="load")
                await page.wait_for_selector("body[data-ready='1']", timeout=15000)
                banner = page.locator("#banner")
                assert await banner.get_attribute("role") == "alert"
                assert await banner.is_hidden()
                # Problem devices first: the alarms, then never seen, then revoked, then ok.
                order = [await r.get_attribute("data-device") for r in await page.locator("#fleet tbody tr").all()]
                assert order == ["bin-02", "sl-02", "sl-03", "bin-03", "bin-01", "sl-01"], order

                # Keyboard focus on a device link survives the periodic rebuild of the table.
                link = page.locator("#fleet tbody tr[data-device='bin-01'] a")
                await link.focus()
                await page.evaluate("refresh()")
                assert await page.evaluate("document.activeElement.closest('tr')?.dataset.device") == "bin-01"

                # The gateway is down: the page says how old what it shows is and why, and greys it.
                await server.stop()
                stopped = True
                await page.evaluate("refresh()")
                await expect(banner).to_be_visible(timeout=5000)
                text = await banner.inner_text()
                assert text.startswith("Data as of 12:00 UTC (2026-11-21) — gateway unreachable: "), text
                assert await page.evaluate("document.body.classList.contains('data-stale')")
                assert "could not load data: gateway unreachable" in await page.locator("#updated").inner_text()

                # The gateway is back: the banner goes, the rows are no longer greyed, and a screen
                # reader hears it once.
                app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                                 metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN,
                                 clock=lambda: float(NOW))
                server = await start_http(app, host="127.0.0.1", port=port, shutdown_timeout_s=1.0)
                stopped = False
                await page.evaluate("refresh()")
                await expect(banner).to_be_hidden(timeout=5000)
                assert not await page.evaluate("document.body.classList.contains('data-stale')")
                assert await page.locator("#live-status").inner_text() == "The gateway answers again: data is current."

                # The store is damaged: the gateway answers 503 with its reason, and the page shows it.
                damage(fleet.queries.db_path)
                await page.evaluate("refresh()")
                await expect(banner).to_be_visible(timeout=5000)
                text = await banner.inner_text()
                assert text.startswith("Data as of 12:00 UTC (2026-11-21) — store damaged or unavailable: "
                                       "gateway backend unavailable ("), text
                assert await page.evaluate("document.body.classList.contains('data-stale')")
                await page.screenshot(path=str(repo_root / "artifacts" / "dashboard-stale.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        if not stopped:
            await server.stop()


async def test_the_plan_is_planned_again_when_the_gateways_day_changes(fleet: Fleet) -> None:
    """QA: the plan panel was loaded once: a page open all day showed yesterday's round."""
    from playwright.async_api import async_playwright, expect

    from gateway.routes.model import Depot
    from gateway.routes.source import GatewayBinSource
    from gateway.routes.web import PlanDefaults, routes_handlers

    now = [float(NOW)]
    source = GatewayBinSource(db_path=fleet.queries.db_path, registry=fleet.registry)
    plan_routes = routes_handlers(source, PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=1.0),
                                  clock=lambda: now[0])
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: now[0],
                     extra_routes=plan_routes)
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                await page.goto(server.url + "/", wait_until="load")
                title = page.locator("#plan-section h2")
                # (No wait_for_function: the page's CSP forbids the eval it uses.)
                await expect(title).to_contain_text("2026-11-22", timeout=30000)
                # A day later, the next fleet refresh notices the new day and plans the round after it.
                now[0] += 86400
                await page.evaluate("refresh()")
                await expect(title).to_contain_text("2026-11-23", timeout=30000)
                assert await title.inner_text() == "Next round's collection plan (2026-11-23)"
            finally:
                await browser.close()
    finally:
        await server.stop()


async def test_hung_late_or_malformed_answers_and_a_refused_replan(fleet: Fleet, monkeypatch: pytest.MonkeyPatch,
                                                                  ) -> None:
    """Review of 7dabf1f: a gateway that took the connection and never answered never showed the banner
    (and the 30-second requests piled up); a late answer overwrote a newer one; one ``{}`` answer threw,
    and later failures threw in showStale; a refused re-plan (429) replaced the plan on screen; a plan
    made before the first /api/dashboard answer was not re-planned for the next round; the focus restore
    scrolled the page; an empty fleet kept the old map label. The faults are made by a middleware in
    front of the real gateway; the browser's timers run on playwright's clock."""
    from aiohttp import web
    from playwright.async_api import async_playwright, expect

    import gateway.routes.web as routes_web
    from gateway.routes.model import Depot
    from gateway.routes.source import GatewayBinSource
    from gateway.routes.web import PlanDefaults, routes_handlers

    now = [float(NOW)]
    fault = {"mode": "503"}
    held: list[asyncio.Event] = []

    @web.middleware
    async def faults(request: web.Request, handler: Any) -> web.StreamResponse:
        mode = fault["mode"]
        if request.path != "/api/dashboard" or mode == "pass":
            return await handler(request)
        if mode == "503":
            return web.json_response({"error": {"code": "backend_unavailable", "message": "down"}}, status=503)
        if mode == "empty":
            return web.json_response({})
        if mode == "hang":  # accepts the request, never answers
            await asyncio.Event().wait()
        if mode == "late":  # answers now's data, but only once released
            response = await handler(request)
            release = asyncio.Event()
            held.append(release)
            await release.wait()
            return response
        if mode == "no-devices":
            data = json.loads(cast(web.Response, await handler(request)).text or "")
            return web.json_response({**data, "devices": [], "alarms": []})
        raise AssertionError(mode)

    # Three new plans per client (not 10): the page's fourth uncached plan is refused, as after 10.
    monkeypatch.setattr(routes_web, "CLIENT_PLANS_PER_WINDOW", 3)
    source = GatewayBinSource(db_path=fleet.queries.db_path, registry=fleet.registry)
    plan_routes = routes_handlers(source, PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=1.0, cache_s=0.0),
                                  clock=lambda: now[0])
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: now[0],
                     extra_routes=plan_routes)
    app.middlewares.append(faults)
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 600})
                requests: list[str] = []
                page.on("request", lambda r: requests.append(urlsplit(r.url).path))
                await page.clock.install()
                banner, title, updated = page.locator("#banner"), page.locator("#plan-section h2"), page.locator("#updated")

                # The first /api/dashboard fails: the plan is today's (the page does not know the gateway's
                # time yet). Once the gateway answers, today's round has started: the next round's is planned.
                await page.goto(server.url + "/", wait_until="load")
                await expect(banner).to_contain_text("No data loaded — store damaged or unavailable: down")
                await expect(page.locator("#plan-summary, #no-plan, #plan-error")).to_have_count(1, timeout=30000)
                assert await title.inner_text() == "Today's collection plan"
                fault["mode"] = "pass"
                await page.evaluate("refresh()")
                await expect(title).to_have_text("Next round's collection plan (2026-11-22)", timeout=30000)
                assert await banner.is_hidden()
                plan_text = await page.locator("#plan").inner_text()

                # Focus kept on a fleet link without scrolling the page back to it.
                await page.focus("#fleet tbody tr[data-device='bin-01'] a")
                await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
                y0 = await page.evaluate("scrollY")
                assert y0 > 0
                await page.evaluate("refresh()")
                assert await page.evaluate("scrollY") == y0
                assert await page.evaluate("document.activeElement.closest('tr')?.dataset.device") == "bin-01"

                # A malformed 200: the data on screen is kept and flagged; a later failure still says its age.
                fault["mode"] = "empty"
                await page.evaluate("refresh()")
                assert await banner.inner_text() == ("Data as of 12:00 UTC (2026-11-21) — gateway answered with "
                                                     "unexpected data (no generated_at). Retrying every 30 s.")
                # The same failure again does not rewrite the alert (a screen reader would say it again).
                await page.evaluate("""window.__alerts = 0; new MutationObserver(() => window.__alerts++)
                    .observe(document.getElementById('banner'), {childList: true, characterData: true, subtree: true})""")
                await page.evaluate("refresh()")
                assert await page.evaluate("window.__alerts") == 0

                # A hung gateway: the banner after 20 s, and never more than one request waiting.
                fault["mode"] = "hang"
                before = requests.count("/api/dashboard")
                await page.evaluate("void refresh()")
                await page.clock.run_for(19_000)
                assert "unexpected data" in await banner.inner_text()
                await page.clock.run_for(1_500)
                await expect(banner).to_contain_text("Data as of 12:00 UTC (2026-11-21) — gateway did not answer "
                                                     "within 20 s")
                for _ in range(4):  # 4 × 30 s: the refresh loop's requests, each timed out before the next
                    await page.clock.run_for(30_000)
                    await asyncio.sleep(0.2)
                started = requests.count("/api/dashboard") - before
                assert 2 <= started <= 4, started

                # A late answer (12:00) is not shown over the newer one (13:00) asked for after it.
                fault["mode"] = "late"
                await page.evaluate("void refresh()")
                for _ in range(50):
                    if held:
                        break
                    await asyncio.sleep(0.05)
                now[0] += 3600
                fault["mode"] = "pass"
                await page.evaluate("refresh()")
                await expect(updated).to_have_text("updated 2026-11-21 13:00:00 UTC")
                held[0].set()
                await asyncio.sleep(0.5)
                await expect(updated).to_have_text("updated 2026-11-21 13:00:00 UTC")
                assert await banner.is_hidden()

                # A refused re-plan (429 too_many_plans, Retry-After about 600 s) keeps the plan with a note,
                # and is asked again after Retry-After (not the 5-minute period).
                await page.evaluate("runPlan()")
                note = page.locator("#plan-note")
                await expect(note).to_contain_text("Not re-planned just now: at most 3 new plans per client in "
                                                   "10 minutes")
                await expect(note).to_contain_text("The plan below is kept; retrying in 10 min.")
                assert plan_text in await page.locator("#plan").inner_text()
                asked = requests.count("/api/routes/plan")
                await page.clock.run_for(590_000)
                await asyncio.sleep(0.3)
                assert requests.count("/api/routes/plan") == asked
                await page.clock.run_for(12_000)
                for _ in range(50):
                    if requests.count("/api/routes/plan") > asked:
                        break
                    await asyncio.sleep(0.05)
                assert requests.count("/api/routes/plan") > asked

                # An empty fleet: the map says so, not the old fleet's counts.
                fault["mode"] = "no-devices"
                await page.evaluate("refresh()")
                assert await page.locator("#map").get_attribute("aria-label") == "Map: no device positions"
                assert await page.locator("#plan-legend").is_hidden()
            finally:
                await browser.close()
    finally:
        for release in held:
            release.set()
        await server.stop()


async def test_without_javascript_only_the_note_is_shown(fleet: Fleet) -> None:
    """Review: without JavaScript the "loading…" texts stayed next to the <noscript> note."""
    from playwright.async_api import async_playwright, expect

    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(java_script_enabled=False)
                await page.goto(server.url + "/", wait_until="load")
                await expect(page.locator("p.noscript")).to_be_visible()
                await expect(page.locator("#updated")).to_be_hidden()
                await expect(page.locator("main")).to_be_hidden()
            finally:
                await browser.close()
    finally:
        await server.stop()
