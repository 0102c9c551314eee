"""The dashboard when its data goes old, with keyboard focus, and on a phone: in a real headless
Chromium (Debian package), as tests/web/test_web_dashboard_browser.py.

QA: with the store damaged (503) or the gateway down, the page kept every device green "ok" with only
a small grey "could not load data" instead of "updated …"; the 30-second refresh threw keyboard focus
back to <body>; at 375 px the page scrolled sideways (the fleet table spilled out)."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from urllib.parse import urlsplit
from pathlib import Path

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
