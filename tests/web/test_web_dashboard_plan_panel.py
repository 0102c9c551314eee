"""The dashboard's collection-plan panel in a real headless Chromium (Debian package) driven by
playwright: a planning error is shown as such (not as "nothing to collect"), and the plan's
warnings and unserved bins are shown."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from .support import ADMIN_TOKEN, NOW, Fleet
from .test_web_dashboard_browser import CHROMIUM, CHROMIUM_ARGS
from gateway.resources import load_policy
from gateway.web.app import create_app, start_http

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
                       reason="Debian chromium not installed (scripts/setup installs it)"),
]


async def _open_panel(fleet: Fleet, defaults: Any, selector: str) -> tuple[dict[str, Any], list[str]]:
    """Serve the dashboard with the plan endpoint mounted on ``defaults``; return what the panel shows."""
    from playwright.async_api import async_playwright

    from gateway.routes.source import GatewayBinSource
    from gateway.routes.web import routes_handlers

    source = GatewayBinSource(db_path=fleet.queries.db_path, registry=fleet.registry)
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW),
                     extra_routes=routes_handlers(source, defaults, clock=lambda: float(NOW)))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    console_errors: list[str] = []
    shown: dict[str, Any] = {}
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: console_errors.append("pageerror: %s" % e))
                await page.goto(server.url + "/", wait_until="load")
                await page.wait_for_selector(selector, timeout=30000)
                shown["title"] = await page.locator("#plan-section h2").inner_text()
                shown["panel"] = await page.locator("#plan").inner_text()
                shown["no_plan"] = await page.locator("#no-plan").count()
                shown["error_code"] = await page.locator("#plan-error").get_attribute("data-code") \
                    if await page.locator("#plan-error").count() else None
                shown["warnings"] = [await w.inner_text() for w in await page.locator("#plan-warnings li").all()]
                shown["unserved"] = [await r.get_attribute("data-bin")
                                     for r in await page.locator("#plan-unserved tr[data-bin]").all()]
                shown["stops"] = [await r.get_attribute("data-bin")
                                  for r in await page.locator("#plan table.plan-route tr[data-bin]").all()]
            finally:
                await browser.close()
    finally:
        await server.stop()
    return shown, console_errors


async def test_a_planning_error_is_shown_as_an_error_and_the_next_round_switch_still_happens(fleet: Fleet) -> None:
    from gateway.routes.model import Depot
    from gateway.routes.web import PlanDefaults

    # 100 L vehicles cannot take one 240 L bin: every plan is a 422 `capacity` error.
    shown, console_errors = await _open_panel(
        fleet, PlanDefaults(depot=Depot(52.37, 4.89), capacity_l=100, time_limit_s=0), "#plan-error")
    assert shown["no_plan"] == 0, shown  # not "No plan for today (no bins due ...)"
    assert shown["error_code"] == "capacity"
    assert "Route planning failed: vehicle capacity 100 L is smaller than bin" in shown["panel"]
    assert "(capacity, HTTP 422)" in shown["panel"]
    # At NOW (12:00) today's 06:00 round has started: the failed plan still names its round start,
    # so the panel moves on to the next round's (which fails the same way).
    assert shown["title"] == "Next round's collection plan (2026-11-22)"
    # Chromium logs the failed fetches themselves; no script error.
    assert all("422" in e for e in console_errors), console_errors


async def test_the_panel_shows_warnings_and_unserved_bins(fleet: Fleet) -> None:
    from gateway.routes.model import Depot
    from gateway.routes.web import PlanDefaults

    # One 300 L vehicle for two due 240 L bins (bin-02 burning, bin-01 predicted full): bin-01 is left
    # over; a bin-volumes entry naming no registered bin adds a second warning.
    defaults = PlanDefaults(depot=Depot(52.37, 4.89), vehicles=1, capacity_l=300, time_limit_s=0,
                            bin_volumes_l={"bin-99": 120.0})
    shown, console_errors = await _open_panel(fleet, defaults, "#plan-unserved")
    assert console_errors == []
    assert shown["stops"] == ["bin-02"] and shown["unserved"] == ["bin-01"]
    assert "1 due bin not served" in shown["panel"]
    assert any("1 due bin does not fit 1 vehicle of 300 L" in w for w in shown["warnings"]), shown["warnings"]
    assert any("bin-99" in w for w in shown["warnings"]), shown["warnings"]
    assert "Vehicle 1: 1 stop," in shown["panel"] and "1 stop," in shown["panel"]
