"""The dashboard of a real gateway fed by virtual boards: firmware on the MicroPython runtime,
its data UART a pty the gateway opens like a USB serial port; checked in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path


import aiohttp
import pytest

from gateway.config.loader import parse_config
from gateway.service import Gateway

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Virtual seconds per wall second. The gateway's ACKs set the device clock back to the gateway's
# real time (protocol §3 time sync), so only the first window runs this fast; later windows follow
# the device's tick-based schedule.
SPEED = 300

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (scripts/setup)"),
    pytest.mark.skipif(shutil.which("node") is None, reason="node is needed for the MicroPython simulator"),
]

LIGHTS = [("sl-v1", "52.3702", "4.8952", "centre")]


async def test_dashboard_fed_by_virtual_boards(tmp_path: Path, repo_root: Path) -> None:
    from playwright.async_api import async_playwright

    from hil.sim.board import VirtualBoard

    boards = [VirtualBoard("streetlight-esp32", device_id=dev, flash_dir=tmp_path / dev, speed=SPEED, seed=i,
                           zone=zone, lat=lat, lon=lon) for i, (dev, lat, lon, zone) in enumerate(LIGHTS)]
    gw: Gateway | None = None
    try:
        for b in boards:
            await b.start()
            await b.stimulus("light", 3)  # night: lamps on
        # The gateway follows the boards' virtual clock, so ACK time sync does not pull them back to
        # the wall clock (which would hold back their window reports).
        virtual_now = (await boards[0].state())["now"] / 1000.0
        config = parse_config({"gateway": {"id": "gw-vb", "data_dir": str(tmp_path / "data")},
                               "serial": [{"port": b.data_path} for b in boards],
                               "http": {"listen": "127.0.0.1", "port": 0},
                               "sim_clock": {"speed": float(SPEED), "virtual_at": virtual_now,
                                             "wall_at": time.time()}}, source=None)
        gw = Gateway(config)
        for b, (dev, lat, lon, zone) in zip(boards, LIGHTS):
            key = bytes.fromhex(json.loads(b.identity_path.read_text())["key"])
            gw.registry.add(dev, kind="streetlight", zone=zone, lat=lat, lon=lon, key=key)
        await gw.start()
        base = f"http://127.0.0.1:{gw.http_port}"

        async with aiohttp.ClientSession() as http:
            # Wait until both boards' window reports are stored.
            deadline = time.monotonic() + 90
            while True:
                async with http.get(base + "/api/devices") as r:
                    devices = {d["id"]: d for d in (await r.json())["devices"]}
                if all(devices[d]["last_seen"] and "lux" in devices[d]["latest"] for d, *_ in LIGHTS):
                    break
                assert time.monotonic() < deadline, f"no reports yet: {devices}"
                await asyncio.sleep(1)

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(base + "/", wait_until="load")
                await page.wait_for_selector("body[data-ready='1']", timeout=15000)
                for dev, *_ in LIGHTS:
                    row = page.locator(f"#fleet tbody tr[data-device='{dev}']")
                    text = await row.inner_text()
                    assert "serial:/dev/pts/" in text and "lux=" in text and "lamp=" in text, text
                    assert await row.locator("td.status").inner_text() in ("ok", "alarm")
                assert await page.locator("#map g.device-marker").count() == len(LIGHTS)
                assert await page.locator("#summary [data-summary='devices'] .count").inner_text() == str(len(LIGHTS))
                await page.screenshot(path=str(repo_root / "artifacts" / "dashboard-virtual-boards.png"),
                                      full_page=True)
                assert errors == []
            finally:
                await browser.close()
    finally:
        if gw is not None:
            await gw.stop()
        for b in boards:
            await b.stop()
