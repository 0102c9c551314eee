"""The dashboard shows a retired device as retired (table, map mark, summary, legend), never as stale."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .support import ADMIN_TOKEN, NOW, Fleet
from gateway.resources import load_policy
from gateway.web.app import create_app, start_http
from gateway.web.liveness import STALE_WINDOWS, window_of

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
                       reason="Debian chromium not installed (scripts/setup installs it)"),
]


async def test_a_retired_silent_device_shows_as_retired_not_stale(fleet: Fleet) -> None:
    from playwright.async_api import async_playwright

    policy = load_policy()
    later = NOW + STALE_WINDOWS * max(window_of(policy, k) for k in policy["kinds"]) + 60  # sl-01, bin-01 silent
    fleet.registry.retire("sl-01")
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=policy,
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(later))
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
                row = page.locator("#fleet tbody tr[data-device='sl-01'] td.status")
                assert await row.inner_text() == "retired"
                assert await row.get_attribute("class") == "status status-retired"
                assert await page.locator("#fleet tbody tr[data-device='bin-01'] td.status").inner_text() == "stale"
                marker = page.locator("#map g.device-marker[data-device='sl-01']")
                assert await marker.get_attribute("data-status") == "retired"
                assert await marker.locator("text.status-mark").text_content() == "–"
                assert await page.locator("#summary [data-summary='retired'] .count").inner_text() == "1"
                assert await page.locator("#summary [data-summary='stale'] .count").inner_text() == "1"
                assert "“–” retired" in await page.locator("#map-legend").inner_text()
            finally:
                await browser.close()
    finally:
        await server.stop()
    # Only the 404 of the unmounted /api/routes/plan is expected; CSP or JS errors are not.
    assert len(console_errors) <= 1 and all("404" in e for e in console_errors), console_errors
