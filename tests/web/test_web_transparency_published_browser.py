"""The policy fingerprint as a citizen uses it, in a real headless Chromium behind a proxy that publishes
only the public paths: follow the page's link to the policy file, hash what arrives, compare with the
fingerprint the page shows (and that it fits a phone's screen)."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from .support import ADMIN_TOKEN, NOW, Fleet
from .test_web_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, pytestmark  # noqa: F401 (same markers)
from .test_web_transparency_browser import is_public
from gateway.resources import load_policy, policy_path
from gateway.web.app import create_app, start_http


async def test_the_linked_policy_file_hashes_to_the_fingerprint_the_page_shows(fleet: Fleet) -> None:
    """M2: no fingerprint of the policy was published, and its file was not reachable by the public."""
    from playwright.async_api import Route, async_playwright

    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    refused: list[str] = []

    async def proxy(route: Route) -> None:
        path = urlsplit(route.request.url).path
        if is_public(path):
            await route.continue_()
        else:
            refused.append(path)
            await route.fulfill(status=404, body="not published")

    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 320, "height": 800})
                await page.route("**/*", proxy)
                await page.goto(server.url + "/transparency", wait_until="load")
                shown = (await page.locator("#policy-file code.policy-sha256").inner_text()).strip()
                # the 64-digit hash breaks across lines instead of widening the page on a phone
                assert await page.evaluate(
                    "document.documentElement.scrollWidth <= document.documentElement.clientWidth")
                href = await page.locator("#policy-file a", has_text="policy.json").evaluate("a => a.href")
                assert urlsplit(href).path == "/policy.json"
                resp = await page.request.get(href)
                body = await resp.body()
                assert resp.status == 200 and hashlib.sha256(body).hexdigest() == shown
                assert body == policy_path().read_bytes()
                # the published publisher line says what is not set
                assert "Published by: not set" in await page.locator("#publisher").inner_text()
            finally:
                await browser.close()
    finally:
        await server.stop()
    assert refused == [], refused
