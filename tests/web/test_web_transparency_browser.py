"""The transparency page as the public sees it: in a real headless Chromium (Debian package), behind
a reverse proxy that publishes only the public paths (docs/gateway.md, "Publishing open data")."""

from __future__ import annotations

from urllib.parse import urlsplit

from .support import ADMIN_TOKEN, NOW, Fleet
from .test_web_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, pytestmark  # noqa: F401 (same markers)
from gateway.resources import load_policy
from gateway.web.app import create_app, start_http
from gateway.web.pages import PUBLIC_PATHS


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or any(path.startswith(p) for p in PUBLIC_PATHS if p.endswith("/"))


async def test_the_page_is_styled_and_links_only_public_paths_behind_the_proxy(fleet: Fleet) -> None:
    """QA: behind the suggested reverse proxy the page lost its styling (/static/style.css) and had dead
    links to the dashboard and /openapi.json, and never linked /opendata."""
    from playwright.async_api import Route, async_playwright

    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    refused: list[str] = []
    console_errors: list[str] = []

    async def proxy(route: Route) -> None:
        # What the city's proxy does: the public paths pass, anything else is not there.
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
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
                await page.route("**/*", proxy)
                await page.goto(server.url + "/transparency", wait_until="load")
                assert await page.locator("tr[data-field='mot'] td.privacy").inner_text() != ""
                # Styled: the stylesheet's colours are applied, with no request for it.
                assert await page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(246, 247, 249)"
                assert await page.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor") \
                    == "rgb(20, 54, 93)"
                links = [urlsplit(await a.evaluate("a => a.href")).path for a in await page.locator("a[href]").all()]
                assert "/opendata" in links and "/transparency.json" in links
                assert all(is_public(p) for p in links), links
                await page.locator("a", has_text="Open data").click()
                await page.wait_for_url("**/opendata")
                # A page for people (it was the JSON catalogue), styled the same, its links public.
                assert await page.locator("h1").inner_text() == "City sensor data: streetlight and waste bin devices"
                assert await page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(246, 247, 249)"
                assert await page.locator("tr[data-field='streetlight.lux']").count() == 1
                downloads = {await a.get_attribute("type"): await a.evaluate("a => a.href")
                             for a in await page.locator("#downloads a[href]").all()}
                assert set(downloads) == {"text/csv", "application/geo+json", "application/ld+json"}
                links = [urlsplit(await a.evaluate("a => a.href")).path for a in await page.locator("a[href]").all()]
                assert all(is_public(p) for p in links), links
                # Each download answers with its media type.
                for media, url in downloads.items():
                    resp = await page.request.get(url)
                    assert resp.status == 200 and resp.headers["content-type"].startswith(media), (url, resp.status)
                await page.locator("a", has_text="What is collected and why").click()
                await page.wait_for_url("**/transparency")
            finally:
                await browser.close()
    finally:
        await server.stop()
    assert refused == [] and console_errors == [], (refused, console_errors)


async def test_the_wide_tables_are_reached_by_keyboard_and_named_on_a_phone(fleet: Fleet) -> None:
    """Accessibility audit (WCAG 2.1.1, 1.3.1): at 320 px the eight-column tables scroll in boxes a keyboard
    could reach only where the browser chose to, announced without a name; field codes were plain cells."""
    from playwright.async_api import async_playwright

    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 320, "height": 800})
                for path, boxes in (("/transparency", 3), ("/opendata", 1)):
                    await page.goto(server.url + path, wait_until="load")
                    wraps = page.locator(".table-wrap")
                    assert await wraps.count() == boxes
                    names = []
                    for i in range(boxes):
                        wrap = wraps.nth(i)
                        assert await wrap.get_attribute("tabindex") == "0" and await wrap.get_attribute("role") == "region"
                        label = await page.locator("#" + str(await wrap.get_attribute("aria-labelledby"))).inner_text()
                        names.append(label)
                        if label != "Who receives what":  # two columns fit; the field tables are wider than a phone
                            assert await wrap.evaluate("w => w.scrollWidth > w.clientWidth"), (path, label)
                    assert all(names) and len(set(names)) == boxes, names
                    # Tab until the first box has the focus; then the arrow key scrolls it.
                    first = wraps.nth(0)
                    for _ in range(40):
                        await page.keyboard.press("Tab")
                        if await first.evaluate("w => document.activeElement === w"):
                            break
                    else:
                        raise AssertionError("Tab never reached the table box on " + path)
                    await page.keyboard.press("ArrowRight")
                    await page.wait_for_function("() => document.activeElement.scrollLeft > 0")
                    # Field codes are row headers, columns have scope.
                    assert await page.locator("tbody th[scope=row] code").count() >= 4
                    assert await page.locator("thead th:not([scope=col])").count() == 0
            finally:
                await browser.close()
    finally:
        await server.stop()
