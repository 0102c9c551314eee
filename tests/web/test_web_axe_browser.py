"""Every HTML page the gateway serves, audited by axe-core (WCAG 2.1 A and AA rules) in a real headless
Chromium: the dashboard current and with old data, the transparency page and the open-data page, on a
desktop and at phone width. axe-core comes from npm with the simulator's packages (hil/sim/package.json,
installed by scripts/setup).

An accessibility audit with axe found the dashboard's old data faded below 4.5:1 and the transparency
page's wide tables in unnamed scroll boxes a keyboard could not reach (fixed in 509a2d7, 5ec1bff)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .support import ADMIN_TOKEN, NOW, Fleet
from .test_web_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, pytestmark  # noqa: F401 (same markers)
from gateway.resources import load_policy
from gateway.web.app import create_app, start_http

AXE = Path(__file__).resolve().parents[2] / "hil" / "sim" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


async def _violations(page: Any) -> list[str]:
    """axe's WCAG 2.1 A/AA violations on ``page``, one line each: rule, impact and the first elements."""
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_TAGS)
    return ["%s (%s): %s" % (v["id"], v["impact"], [n["target"] for n in v["nodes"][:3]])
            for v in result["violations"]]


async def test_every_page_has_no_wcag_violation_axe_finds(fleet: Fleet) -> None:
    from playwright.async_api import Route, async_playwright, expect

    assert AXE.is_file(), "%s is missing: run scripts/setup (npm ci in hil/sim)" % AXE
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    found: dict[str, list[str]] = {}
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for width in (1280, 320):
                    # bypass_csp: the pages allow no script but their own; axe is injected for the audit only.
                    context = await browser.new_context(viewport={"width": width, "height": 900}, bypass_csp=True)
                    page = await context.new_page()
                    await page.goto(server.url + "/", wait_until="load")
                    await page.wait_for_selector("body[data-ready='1']", timeout=15000)
                    found["dashboard @%d" % width] = await _violations(page)

                    async def refuse(route: Route) -> None:
                        await route.abort("connectionrefused")

                    await page.route("**/api/dashboard", refuse)
                    await page.evaluate("refresh()")
                    await expect(page.locator("#banner")).to_contain_text("gateway unreachable")
                    found["dashboard with old data @%d" % width] = await _violations(page)

                    for path in ("/transparency", "/opendata"):
                        await page.goto(server.url + path, wait_until="load")
                        assert await page.locator("h1").count() == 1
                        found["%s @%d" % (path, width)] = await _violations(page)
                    await context.close()
            finally:
                await browser.close()
    finally:
        await server.stop()
    assert len(found) == 8
    assert {page: v for page, v in found.items() if v} == {}
