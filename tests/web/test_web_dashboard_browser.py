"""The dashboard in a real headless Chromium (Debian package) driven by playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .support import ADMIN_TOKEN, NOW, Fleet
from gateway.resources import load_policy
from gateway.web.app import create_app, start_http

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
                       reason="Debian chromium not installed (scripts/setup installs it)"),
]


async def test_dashboard_renders_fleet_map_charts_alarms_and_plan(fleet: Fleet, repo_root: Path) -> None:
    from playwright.async_api import async_playwright

    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    console_errors: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: console_errors.append(str(e)))
                await page.goto(server.url + "/", wait_until="load")
                await page.wait_for_selector("body[data-ready='1']", timeout=15000)
                await page.wait_for_selector("#plan p, #plan h3", timeout=15000)

                rows = page.locator("#fleet tbody tr")
                assert await rows.count() == 6
                status = {await r.get_attribute("data-device"): (await r.locator("td.status").inner_text())
                          for r in await rows.all()}
                assert status == {"bin-01": "ok", "bin-02": "alarm", "bin-03": "revoked",
                                  "sl-01": "ok", "sl-02": "alarm", "sl-03": "never"}
                sl01 = page.locator("#fleet tbody tr[data-device='sl-01']")
                assert "serial:" in await sl01.inner_text()
                assert "2026-11-21 11:59:55" in await sl01.inner_text()  # the fixture receives at NOW - 5 s
                assert await sl01.locator("a").get_attribute("href") == "/api/devices/sl-01"

                markers = page.locator("#map g.device-marker")
                assert await markers.count() == 6
                assert await page.locator("#map g.device-marker[data-status='alarm']").count() == 2
                assert await page.locator("#map g.device-marker rect").count() == 3  # bins drawn as squares

                alarms = page.locator("#alarms li[data-alarm]")
                assert [await a.get_attribute("data-alarm") for a in await alarms.all()] == ["fire", "lamp_fail"]

                assert await page.locator("#chart-mot polyline.series").count() == 1
                assert await page.locator("#chart-mot circle.point").count() == 1  # the morning's one 6-hour release
                assert await page.locator("#chart-wh polyline.series").count() == 1
                assert await page.locator("#chart-fill rect.bar").count() == 2
                assert await page.locator("#summary [data-summary='open alarms'] .count").inner_text() == "2"
                # No collection plan is mounted here: the labelled section says so.
                assert await page.locator("#plan-section h2").inner_text() == "Today's collection plan"
                assert await page.locator("#no-plan").is_visible()

                out = repo_root / "artifacts" / "dashboard.png"
                out.parent.mkdir(exist_ok=True)
                await page.screenshot(path=str(out), full_page=True)
                assert out.stat().st_size > 10000

                # The transparency page renders in the same browser, styled, from the policy.
                await page.goto(server.url + "/transparency", wait_until="load")
                assert await page.locator("tr[data-field='mot'] td.privacy").inner_text() != ""
            finally:
                await browser.close()
    finally:
        await server.stop()
    # Only the 404 of the unmounted /api/routes/plan is expected; CSP or JS errors are not.
    assert len(console_errors) <= 1 and all("404" in e for e in console_errors), console_errors


async def test_dashboard_shows_the_collection_plan_when_routes_are_mounted(fleet: Fleet, repo_root: Path) -> None:
    from playwright.async_api import async_playwright

    from gateway.routes.model import Depot
    from gateway.routes.source import GatewayBinSource
    from gateway.routes.web import PlanDefaults, routes_handlers

    source = GatewayBinSource(db_path=fleet.queries.db_path, registry=fleet.registry)
    # At NOW (12:00) today's round (06:00) has started: the dashboard shows the next round's plan, which
    # takes the readings up to tomorrow's round start (the demo starts at 18:00 and showed "no plan for
    # today: no fill reading before the round start" beside bins with fill data).
    plan_routes = routes_handlers(source, PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=1.0),
                                  clock=lambda: float(NOW))
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW),
                     extra_routes=plan_routes)
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    console_errors: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
                await page.goto(server.url + "/", wait_until="load")
                await page.wait_for_selector("#plan table.plan-route, #no-plan", timeout=30000)
                # bin-02 is burning: an alarm stop that must be in today's plan.
                stops = page.locator("#plan table.plan-route tr[data-bin]")
                bins = [await s.get_attribute("data-bin") for s in await stops.all()]
                assert "bin-02" in bins
                assert "bin-03" not in bins  # revoked and silent
                assert "2026-11-22" in await page.locator("#plan-summary").inner_text()
                assert await page.locator("#plan-section h2").inner_text() == "Next round's collection plan (2026-11-22)"
                # The route is drawn over the map, from the depot through the stops.
                assert await page.locator("#map polyline.plan-path").count() >= 1
                assert await page.locator("#map .plan-depot").count() == 1
                await page.screenshot(path=str(repo_root / "artifacts" / "dashboard-plan.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        await server.stop()
    assert console_errors == []


async def test_the_pass_chart_says_its_points_are_six_hour_counts(fleet: Fleet) -> None:
    """QA: the chart titled "Passes under lamps per hour" plots the 6-hourly mot count (one point
    per 6 hours, each the passes of 6 hours)."""
    from playwright.async_api import async_playwright

    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                await page.goto(server.url + "/", wait_until="load")
                await page.wait_for_selector("body[data-ready='1']", timeout=15000)
                caption = await page.locator("#caption-mot").inner_text()
                assert caption.startswith("Passes under lamps per 6 hours (") and "per hour" not in caption, caption
                assert await page.locator("#caption-wh").inner_text() == "Lamp energy per hour (Wh, all streetlights)"
                # The one point is the 06:00-12:00 release of both lamps (31 + 32 noisy passes).
                point = page.locator("#chart-mot circle.point title")
                assert await point.count() == 1
                assert await point.text_content() == "06:00–12:00 UTC: 63"
                # Its axis runs to the end of that period, not an hour after its start.
                assert await page.locator("#chart-mot text").last.text_content() == "12:00 UTC"
                assert await page.locator("#chart-wh circle.point title").first.text_content() == "06:00–07:00 UTC: 92"
            finally:
                await browser.close()
    finally:
        await server.stop()


async def test_a_point_of_a_field_released_more_often_than_hourly_spans_its_hour(fleet: Fleet) -> None:
    """Review L6: the tooltips and the axis took a field's release period as a point's span, but the
    series are hourly: a field released every 15-minute window showed '06:00–06:15' for an hour's sum."""
    import copy

    from playwright.async_api import async_playwright

    policy = copy.deepcopy(load_policy())  # load_policy's dict is shared
    del policy["kinds"]["streetlight"]["fields"]["mot"]["release_every_s"]  # released with every window
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=policy,
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                await page.goto(server.url + "/", wait_until="load")
                await page.wait_for_selector("body[data-ready='1']", timeout=15000)
                assert "per 15 min" in await page.locator("#caption-mot").inner_text()
                point = page.locator("#chart-mot circle.point title")
                assert await point.count() == 1
                assert await point.text_content() == "06:00–07:00 UTC: 63"
                assert await page.locator("#chart-mot text").last.text_content() == "07:00 UTC"
            finally:
                await browser.close()
    finally:
        await server.stop()
