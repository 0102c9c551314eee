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


async def _open_panel(fleet: Fleet, defaults: Any, selector: str,
                      fail_tomorrow: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Serve the dashboard with the plan endpoint mounted on ``defaults`` (None: not mounted, the
    endpoint is a 404); return what the panel shows. ``fail_tomorrow``: the browser's request for the
    next round's plan fails at the network level (the connection is aborted; no answer, no date)."""
    from playwright.async_api import Route, async_playwright

    from gateway.routes.source import GatewayBinSource
    from gateway.routes.web import routes_handlers

    source = GatewayBinSource(db_path=fleet.queries.db_path, registry=fleet.registry)
    extra = [] if defaults is None else routes_handlers(source, defaults, clock=lambda: float(NOW))
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW),
                     extra_routes=extra)
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
                if fail_tomorrow:
                    async def abort(route: Route) -> None:
                        await route.abort("connectionreset")

                    await page.route("**/api/routes/plan?date=tomorrow", abort)
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
                shown["summary"] = await page.locator("#plan-summary").inner_text() \
                    if await page.locator("#plan-summary").count() else None
                shown["unserved_title"] = await page.locator("#plan-unserved-title").inner_text() \
                    if await page.locator("#plan-unserved-title").count() else None
                # markup in a warning must stay text: no element made of it, no handler run
                shown["injected"] = await page.locator("#plan img, #plan-warnings li *").count()
                shown["xss"] = await page.evaluate("window.__xss === undefined ? null : window.__xss")
                # Errors and warnings are status messages: inside a polite live region that was in the
                # page before them (a region inserted with its text is often not spoken).
                shown["spoken"] = await page.evaluate("""[...document.querySelectorAll('#plan-error, #plan-warnings')]
                    .map((n) => Boolean(n.closest('#plan-live[role=status][aria-live=polite]')))""")
                # The same error at the next re-plan is not put in the region again (said again).
                if shown["error_code"] is not None:
                    shown["error_kept"] = await page.evaluate("""async () => {
                      const before = document.getElementById('plan-error');
                      await runPlan();
                      return document.getElementById('plan-error') === before; }""")
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
    assert shown["spoken"] == [True] and shown["error_kept"] is True
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
    # over; bin-volumes entries naming no registered bin add a second warning, one of them markup
    # (the ids of a bin-volumes CSV are the operator's text, shown as text).
    img = "<img src=x onerror=window.__xss=1>"
    defaults = PlanDefaults(depot=Depot(52.37, 4.89), vehicles=1, capacity_l=300, time_limit_s=0,
                            bin_volumes_l={"bin-99": 120.0, img: 120.0})
    # bin-01's fill rose 10 % per 6-hour release (the level at the end of each 6 h, policy) up to the
    # morning's 50 %: 40 %/day, full before the round after next
    for k, fill in enumerate((10, 20, 30, 40)):
        await fleet.report("bin-01", {"t": "win", "k": "bin", "w": NOW - (5 - k) * 6 * 3600, "l": 6 * 3600,
                                      "m": {"fill": fill}}, link="ble:AA:BB:CC:00:00:00")
    shown, console_errors = await _open_panel(fleet, defaults, "#plan-unserved")
    assert console_errors == []
    assert shown["stops"] == ["bin-02"] and shown["unserved"] == ["bin-01"]
    assert shown["unserved_title"] == "1 due bin not served: plan it on another vehicle or round"
    assert any("1 due bin does not fit 1 vehicle of 300 L" in w for w in shown["warnings"]), shown["warnings"]
    (volumes,) = [w for w in shown["warnings"] if "bin-99" in w]
    assert img in volumes, volumes  # shown literally, as text
    assert shown["injected"] == 0 and shown["xss"] is None
    assert shown["spoken"] == [True]
    assert "Vehicle 1: 1 stop," in shown["panel"]
    assert shown["summary"] is not None and shown["summary"].startswith("2026-11-2") \
        and ": 1 stop, " in shown["summary"], shown["summary"]


async def test_a_gateway_without_route_planning_says_it_is_not_available(fleet: Fleet) -> None:
    shown, console_errors = await _open_panel(fleet, None, "#no-plan")
    assert shown["panel"] == "Route planning is not available on this gateway."
    assert shown["title"] == "Today's collection plan" and shown["error_code"] is None
    assert all("404" in e for e in console_errors), console_errors


async def test_a_next_round_request_failing_without_a_date_leaves_no_empty_parentheses(fleet: Fleet) -> None:
    from gateway.routes.model import Depot
    from gateway.routes.web import PlanDefaults

    # Today's plan works and its 06:00 round has started at NOW (12:00): the panel asks for the next
    # round's, and that request gets no answer (so no date to show).
    defaults = PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0)
    shown, _ = await _open_panel(fleet, defaults, "#plan-error", fail_tomorrow=True)
    assert shown["error_code"] == "unreachable"
    assert shown["title"] == "Next round's collection plan", shown["title"]
    assert "could not reach the gateway" in shown["panel"]
