"""The dashboard's accessibility (WCAG 2.1 AA) in a real headless Chromium (Debian package), as
tests/web/test_web_dashboard_browser.py.

Audit (axe-core 4.14.1 and by hand): the stale state faded text to 1.8-2.9:1; grey markers and chart
axes were 2.96:1; the 30-second refresh could not be paused and rebuilt the fleet table, focusing the
focused link again (a screen reader said "bin-02, link" every 30 s); a new alarm was not announced; the
stale banner was un-hidden with its text (not spoken); route lines differed by colour only, with no key;
the plan tables had no header cells for their columns; no skip link.

Contrast is computed here from the computed styles as well as by axe (tests/web/test_web_axe_browser.py): text
4.5:1 (3:1 when large), graphics 3:1, against the nearest opaque background, with the elements' and
their ancestors' opacity applied and no CSS filter allowed.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from .support import ADMIN_TOKEN, NOW, Fleet
from .test_web_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, pytestmark  # noqa: F401 (same markers)
from gateway.resources import load_policy
from gateway.web.app import create_app, start_http

# Every text (own text node) and graphic of the data panels, with its contrast against what is behind it.
CONTRAST_JS = """() => {
  const parse = (c) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(c || "");
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const lin = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const lum = (c) => 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const over = (fg, alpha, bg) => [0, 1, 2].map((i) => fg[i] * alpha + bg[i] * (1 - alpha));
  const background = (node) => {
    for (let n = node; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c[3] > 0) return c;
    }
    return [255, 255, 255, 1];
  };
  const fade = (node) => {
    let opacity = 1, filters = [];
    for (let n = node; n; n = n.parentElement) {
      const cs = getComputedStyle(n);
      opacity *= Number(cs.opacity);
      if (cs.filter && cs.filter !== "none") filters.push(cs.filter);
    }
    return [opacity, filters];
  };
  const name = (n) => n.tagName.toLowerCase() + (n.id ? "#" + n.id : "") + (n.getAttribute("class") ? "." + n.getAttribute("class") : "")
    + " '" + (n.textContent || "").trim().slice(0, 30) + "'";
  const out = [];
  const check = (node, color, bg, need) => {
    const c = parse(color);
    if (!c || c[3] === 0) return;
    const [opacity, filters] = fade(node);
    out.push({ what: name(node), ratio: ratio(over(c, c[3] * opacity, bg), bg), need, filters });
  };
  const roots = ["#banner", "#summary", "#map", "#map-legend", "#route-key", "#alarms", "#fleet", "#charts", "header"]
    .map((s) => document.querySelector(s)).filter(Boolean);
  for (const root of roots) {
    for (const n of [root, ...root.querySelectorAll("*")]) {
      const cs = getComputedStyle(n);
      if (cs.display === "none" || cs.visibility === "hidden" || n.closest("[hidden], .sr-only, title")) continue;
      const own = [...n.childNodes].some((t) => t.nodeType === 3 && t.textContent.trim());
      const svgText = n instanceof SVGElement;
      if (own) {
        const px = parseFloat(cs.fontSize), bold = Number(cs.fontWeight) >= 700;
        const large = !svgText && (px >= 24 || (bold && px >= 18.66));
        let bg = background(n);
        // The mark inside a marker is drawn on the marker's own shape.
        if (n.classList.contains("status-mark")) bg = parse(getComputedStyle(n.parentNode.querySelector("rect, circle")).fill);
        check(n, svgText ? cs.fill : cs.color, bg, large ? 3 : 4.5);
      }
      const graphic = n.matches("#map .device-marker rect, #map .device-marker circle, .axis, .plan-path, .plan-depot,"
        + " .series, .point, .bar, #route-key line");
      if (graphic) {
        const paint = cs.fill !== "none" && parse(cs.fill) && lum(parse(cs.fill)) < 0.9 ? cs.fill : cs.stroke;
        check(n, paint, background(n.ownerSVGElement || n), 3);
      }
    }
  }
  return out;
}"""

STATUS_COLORS = {"#1a7f37", "#cf222e", "#bc4c00", "#6e7781", "#8c959f"}


def low_contrast(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The checked elements below their minimum contrast, or drawn through a CSS filter."""
    assert len(found) > 50, found  # the panels were checked, not an empty page
    return [f for f in found if f["ratio"] < f["need"] or f["filters"]]


async def test_contrast_structure_and_route_key_when_current_and_when_old(fleet: Fleet) -> None:
    from playwright.async_api import Route, async_playwright, expect

    from gateway.routes.model import Depot
    from gateway.routes.source import GatewayBinSource
    from gateway.routes.web import PlanDefaults, routes_handlers

    source = GatewayBinSource(db_path=fleet.queries.db_path, registry=fleet.registry)
    plan_routes = routes_handlers(source, PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=1.0),
                                  clock=lambda: float(NOW))
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW),
                     extra_routes=plan_routes)
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                await page.goto(server.url + "/", wait_until="load")
                await page.wait_for_selector("body[data-ready='1']", timeout=15000)
                await page.wait_for_selector("#plan table.plan-route", timeout=30000)

                # The skip link is the first stop of the keyboard, visible when focused, and leads to main.
                await page.keyboard.press("Tab")
                skip = page.locator(".skip-link")
                assert await page.evaluate("document.activeElement.className") == "skip-link"
                assert await skip.inner_text() == "Skip to content"
                box = await skip.bounding_box()
                assert box is not None and box["x"] >= 0 and box["y"] >= 0 and box["width"] > 20, box
                await page.keyboard.press("Enter")
                assert await page.evaluate("document.activeElement.id") == "main"
                # Links to machine-readable documents say what they open.
                nav = [await a.inner_text() for a in await page.locator("header nav a").all()]
                assert nav[2:] == ["API (JSON)", "Metrics (Prometheus text)", "Health (JSON)"], nav
                assert await page.locator("#fleet-count").get_attribute("role") == "status"
                fonts = await page.evaluate("""['#fleet-filter', '#fleet-sort', '#pause'].map(
                    (s) => getComputedStyle(document.querySelector(s)).fontFamily === getComputedStyle(document.body).fontFamily)""")
                assert fonts == [True, True, True]
                legend = await page.locator("#map-legend").inner_text()
                assert "fleet table" in legend and "hover" not in legend, legend

                # The plan's tables: column headers in a thead, named by their heading.
                for table in await page.locator("#plan table.plan-route").all():
                    assert await table.locator("thead th[scope='col']").count() == 5
                    assert await table.locator("tbody th, thead td").count() == 0
                    heading = await table.get_attribute("aria-labelledby")
                    assert heading and (await page.locator(f"h3#{heading}").inner_text()).startswith("Vehicle ")

                # Normal state: every text 4.5:1, every graphic 3:1.
                assert low_contrast(await page.evaluate(CONTRAST_JS)) == []

                # Three routes (one plan of this fleet has one): a distinct dash pattern each, no status
                # colour, and a key naming each vehicle beside a sample of its line.
                await page.evaluate("""() => {
                  const at = Object.fromEntries(lastDevices.map((d) => [d.id, d]));
                  const stop = (id) => ({ bin_id: id, lat: at[id].lat, lon: at[id].lon });
                  lastPlan = { ...lastPlan, routes: [
                    { vehicle: 1, stops: [stop("bin-01")] }, { vehicle: 2, stops: [stop("bin-02")] },
                    { vehicle: 3, stops: [stop("bin-03"), stop("bin-01")] }] };
                  renderMap(lastDevices);
                }""")
                paths = await page.evaluate("""[...document.querySelectorAll('#map .plan-path')].map((l) =>
                    [l.dataset.vehicle, l.getAttribute('stroke-dasharray'), l.getAttribute('stroke')])""")
                assert sorted(p[0] for p in paths) == ["1", "2", "3"], paths
                assert len({p[1] for p in paths}) == 3, paths
                assert not {p[2].lower() for p in paths} & STATUS_COLORS, paths
                key = page.locator("#route-key")
                await expect(key).to_be_visible()
                samples = await page.evaluate("""[...document.querySelectorAll('#route-key li')].map((li) =>
                    [li.dataset.vehicle, li.textContent, li.querySelector('line').getAttribute('stroke-dasharray'),
                     li.querySelector('line').getAttribute('stroke')])""")
                assert [s[1] for s in samples] == ["vehicle 1 (1 stop)", "vehicle 2 (1 stop)", "vehicle 3 (2 stops)"]
                assert sorted((s[0], s[2], s[3]) for s in samples) == sorted((p[0], p[1], p[2]) for p in paths)
                assert low_contrast(await page.evaluate(CONTRAST_JS)) == []

                # The alert is in the page, empty, while the data is current (its text will be spoken).
                banner = page.locator("#banner")
                assert await banner.get_attribute("role") == "alert"
                assert await page.evaluate("""(() => { const b = document.getElementById('banner');
                    return !b.hidden && getComputedStyle(b).display !== 'none' && b.textContent === ''; })()""")

                # Old data: marked by the banner and an "old data" tag, its text as readable as before.
                async def refuse(route: Route) -> None:
                    await route.abort("connectionrefused")

                await page.route("**/api/dashboard", refuse)
                await page.evaluate("refresh()")
                await expect(banner).to_contain_text("Data as of 12:00 UTC (2026-11-21) — gateway unreachable")
                assert await page.evaluate("getComputedStyle(document.querySelector('#fleet-section h2'), '::after')"
                                           ".content") == '"old data"'
                assert low_contrast(await page.evaluate(CONTRAST_JS)) == []
            finally:
                await browser.close()
    finally:
        await server.stop()


async def test_pause_focus_and_new_alarm_announcement(fleet: Fleet) -> None:
    """The refresh can be paused (nothing is asked for while paused, resuming asks at once), does not
    move or re-focus the focused link, keeps the rows, and says a new alarm once."""
    from playwright.async_api import Route, async_playwright, expect

    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=1.0)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                requests: list[str] = []
                page.on("request", lambda r: requests.append(urlsplit(r.url).path))
                await page.clock.install()
                await page.goto(server.url + "/", wait_until="load")
                await page.wait_for_selector("body[data-ready='1']", timeout=15000)
                news = page.locator("#alarm-news")
                assert await news.get_attribute("role") == "status"
                # The alarms open at the first load are listed, not announced.
                assert await news.text_content() == ""
                await page.evaluate("""window.__news = []; new MutationObserver(() => window.__news.push(
                    document.getElementById('alarm-news').textContent)).observe(document.getElementById('alarm-news'),
                    {childList: true, characterData: true, subtree: true});
                  window.__focus = 0; document.addEventListener('focusin', () => window.__focus++, true);
                  document.addEventListener('focusout', () => window.__focus++, true);""")

                # Focus on bin-01's link; a refresh keeps the same row and link elements and fires no focus event.
                await page.focus("#fleet tbody tr[data-device='bin-01'] a")
                await page.evaluate("window.__focus = 0; window.__link = document.activeElement;"
                                    "window.__rows = [...document.querySelectorAll('#fleet tbody tr')]")
                await page.evaluate("refresh()")
                assert await page.evaluate("document.activeElement === window.__link && window.__focus === 0")
                assert await page.evaluate("[...document.querySelectorAll('#fleet tbody tr')]"
                                           ".every((tr, i) => tr === window.__rows[i])")

                # bin-01 raises a fire alarm: its row moves up among the problems, its link keeps focus
                # (no blur, no focus again), and the alarm is said once.
                await fleet.report("bin-01", {"t": "alarm", "k": "bin", "w": NOW - 60, "l": 60, "m": {"temp": 75},
                                              "a": ["fire"]}, link="ble:AA:BB:CC:00:00:00")
                await page.evaluate("refresh()")
                order = [await r.get_attribute("data-device") for r in await page.locator("#fleet tbody tr").all()]
                assert order[:3] == ["bin-01", "bin-02", "sl-02"], order
                assert await page.evaluate("document.activeElement === window.__link && window.__focus === 0")
                assert await news.text_content() == "New alarm: bin-01 fire"
                await page.evaluate("refresh()")
                assert await page.evaluate("window.__news") == ["New alarm: bin-01 fire", ""]
                assert await page.locator("#alarms li[data-alarm]").count() == 3

                # The gateway stops answering: the banner says the page retries.
                async def refuse(route: Route) -> None:
                    await route.abort("connectionrefused")

                await page.route("**/api/dashboard", refuse)
                await page.evaluate("refresh()")
                banner = page.locator("#banner")
                await expect(banner).to_contain_text("gateway unreachable")
                assert (await banner.inner_text()).endswith("Retrying every 30 s.")

                # Pause, by keyboard: the banner no longer promises a retry, and nothing is asked for in
                # 100 s of the page's clock.
                pause = page.locator("#pause")
                assert await pause.inner_text() == "Pause live updates"
                assert await pause.get_attribute("aria-pressed") == "false"
                await pause.focus()
                await page.keyboard.press("Space")
                assert await pause.get_attribute("aria-pressed") == "true"
                await expect(page.locator("#updated")).to_contain_text("live updates paused")
                assert (await banner.inner_text()).endswith("Live updates are paused."), await banner.inner_text()
                before = requests.count("/api/dashboard")
                for _ in range(4):  # 100 s
                    await page.clock.run_for(25_000)
                    await asyncio.sleep(0.2)
                assert requests.count("/api/dashboard") == before
                assert await pause.get_attribute("aria-pressed") == "true"

                # The gateway is back. Resume: asked for at once (no clock time passes), then every 30 s again.
                await page.unroute("**/api/dashboard", refuse)
                await page.keyboard.press("Enter")
                assert await pause.get_attribute("aria-pressed") == "false"
                for _ in range(50):
                    if requests.count("/api/dashboard") > before:
                        break
                    await asyncio.sleep(0.05)
                assert requests.count("/api/dashboard") == before + 1
                await expect(page.locator("#updated")).to_have_text("updated 2026-11-21 12:00:00 UTC")
                await expect(banner).to_have_text("")
                await page.clock.run_for(31_000)
                for _ in range(50):
                    if requests.count("/api/dashboard") > before + 1:
                        break
                    await asyncio.sleep(0.05)
                assert requests.count("/api/dashboard") == before + 2
                assert await page.evaluate("document.activeElement.id") == "pause"
            finally:
                await browser.close()
    finally:
        await server.stop()
