"""The web surface as the gateway service mounts it: real Gateway, real HTTP on a free port,
a real pty serial link carrying COBS frames from a simulated device end."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import pytest

from .support import ADMIN_TOKEN, pty_gateway_config
from gateway.protocol.cobs import cobs_encode
from gateway.protocol.frame import FRAME_REPORT, build_frame
from gateway.service import Gateway
from gateway.web.publication import entity_mark

pytestmark = pytest.mark.timeout(60)


async def _wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_gateway_service_serves_api_metrics_health_and_admin(tmp_path: Path) -> None:
    master, slave = os.openpty()
    gw = Gateway(pty_gateway_config(tmp_path, "gw-web", slave, admin=True))
    gw.registry.add("sl-77", kind="streetlight", zone="harbour", lat="51.9", lon="4.48")
    key = gw.registry.key("sl-77")
    await gw.start()
    try:
        assert gw.http_port
        base = f"http://127.0.0.1:{gw.http_port}"
        now = int(time.time())
        sent_mark = entity_mark(now)
        w = now - now % 900 - 900
        frame = build_frame(FRAME_REPORT, "sl-77", 1, {"t": "win", "k": "streetlight", "w": w, "l": 900,
                                                         "m": {"lux": 40, "lvl": 100, "lamp": 0}}, key)
        os.write(master, cobs_encode(frame) + b"\x00")
        async with aiohttp.ClientSession() as http:
            async def stored() -> bool:
                async with http.get(base + "/api/devices/sl-77") as r:
                    return (await r.json())["last_seen"] is not None

            await _wait_for(stored)
            async with http.get(base + "/api/devices/sl-77") as r:
                dev = await r.json()
            assert dev["latest"] == {"lux": 40, "lvl": 100, "lamp": 0}
            assert dev["link"].startswith("serial:") and dev["status"] == "ok"

            async with http.get(base + "/opendata/ngsi-ld/v1/entities?options=keyValues") as r:
                listed = await r.json(content_type=None)
            if entity_mark(time.time()) == sent_mark:
                # received after the last quarter-hour mark: the open data shows it from the next one
                assert listed == [], listed
            else:
                [entity] = listed
                assert entity["id"] == "urn:ngsi-ld:Streetlight:sl-77" and entity["powerState"] == "on"

            async with http.get(base + "/metrics") as r:
                text = await r.text()
            assert 'civicedge_reports_in_total{link_type="serial"} 1.0' in text
            assert "civicedge_reports_stored_total 1.0" in text

            async with http.get(base + "/healthz") as r:
                health = await r.json()
            assert health["status"] in ("ok", "degraded") and isinstance(health["reasons"], list)

            async with http.put(base + "/api/admin/retention", json={"kind": "streetlight", "field": "lux", "days": 7},
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
                assert r.status == 200
            # The gateway's retention task now applies the admin's setting.
            assert gw.retention()[("streetlight", "lux")] == 7
            async with http.put(base + "/api/admin/retention", json={"kind": "streetlight", "field": "lux", "days": 7},
                                headers={"Authorization": "Bearer nope-nope-nope-nope"}) as r:
                assert r.status == 401
    finally:
        await gw.stop()
        os.close(master)
        os.close(slave)


async def test_under_a_simulated_clock_the_web_asks_about_the_same_now_as_ingest(tmp_path: Path) -> None:
    """The demo runs its fleet in virtual time (today 18:00 by default, often ahead of the wall
    clock). The web used the wall clock: a fire reported "now" in virtual time was in the future
    for /api/alarms and the open data, so it was not shown. The open data's publication marks
    follow the same virtual clock: the fire shows in the entity at the next virtual quarter hour."""
    master, slave = os.openpty()
    mark = (int(time.time()) // 86400 + 3) * 86400 + 18 * 3600  # three days ahead, 18:00
    virtual_at = mark - 600  # 17:50, at 60x: the 18:00 mark passes 10 wall seconds later
    gw = Gateway(pty_gateway_config(tmp_path, "gw-sim", slave, sim_clock={
        "speed": 60.0, "virtual_at": float(virtual_at), "wall_at": time.time()}))
    gw.registry.add("bin-7", kind="bin", zone="harbour", lat="51.9", lon="4.48")
    key = gw.registry.key("bin-7")
    await gw.start()
    try:
        assert virtual_at <= gw.clock() < virtual_at + 60 * 60  # virtual time, not the wall clock
        win = int(gw.clock()) // 900 * 900 - 900
        w = int(gw.clock()) // 60 * 60 - 60
        frames = [build_frame(FRAME_REPORT, "bin-7", 1, {"t": "win", "k": "bin", "w": win, "l": 900,
                                                         "m": {"temp": 30, "tilt": 0}}, key),
                  build_frame(FRAME_REPORT, "bin-7", 2, {"t": "alarm", "k": "bin", "w": w, "l": 60, "m": {},
                                                         "a": ["fire"]}, key)]
        os.write(master, b"".join(cobs_encode(f) + b"\x00" for f in frames))
        base = f"http://127.0.0.1:{gw.http_port}"
        async with aiohttp.ClientSession() as http:
            async def alarmed() -> bool:
                async with http.get(base + "/api/alarms") as r:
                    return bool((await r.json())["alarms"])

            await _wait_for(alarmed)
            entity = base + "/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:WasteContainer:bin-7?options=keyValues"
            async with http.get(entity) as r:
                early = r.status
            if gw.clock() < mark:
                assert early == 404  # received after 17:45 (virtual): not published before 18:00

            async def burning() -> bool:
                async with http.get(entity) as r:
                    return r.status == 200 and (await r.json(content_type=None)).get("status") == "burning"

            await _wait_for(burning, timeout=40.0)
            assert gw.clock() >= mark
    finally:
        await gw.stop()
        os.close(master)
        os.close(slave)


async def test_a_retention_set_below_the_retention_interval_is_warned_about(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """PUT /api/admin/retention of 1 day on a gateway whose passes run every 2 days: values outlive it by up to
    a day, and the running gateway says so. Test fails before (the service built its retention settings
    without the interval: nothing was logged)."""
    master, slave = os.openpty()
    gw = Gateway(pty_gateway_config(tmp_path, "gw-short", slave, admin=True, retention={"interval_s": 172800}))
    await gw.start()
    try:
        base = f"http://127.0.0.1:{gw.http_port}"
        caplog.clear()
        async with aiohttp.ClientSession() as http:
            async with http.put(base + "/api/admin/retention", json={"kind": "bin", "field": "temp", "days": 1},
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
                assert r.status == 200, await r.text()
                answer = await r.json()
            # a value kept as long as the interval allows gets no warning in its answer
            async with http.put(base + "/api/admin/retention", json={"kind": "bin", "field": "fill", "days": 2},
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
                assert r.status == 200 and "warning" not in await r.json()
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "interval_s" in r.getMessage()]
        assert len(warned) == 1 and "temp" in warned[0], warned
        assert answer["days"] == 1 and answer["warning"] == warned[0]  # the caller is told too, not only the log
    finally:
        await gw.stop()
        os.close(master)
        os.close(slave)
