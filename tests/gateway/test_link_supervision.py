"""A transport task that ends unexpectedly is logged at ERROR, reported down in /healthz and restarted.

Was: the service started the transport tasks without watching them; one that raised vanished
silently (a DEBUG line at stop, ``stopping links: ble ended with ...``) and /healthz stayed ok.
Then (review of d623792): a transport whose run() returns when cancelled was taken, at stop, for
one that ended unexpectedly: an ERROR during every stop, a sleep, and a restart after the store closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import make_env

from gateway.config import load_config
from gateway.service import ALL_LINKS_DOWN_AFTER_S, Gateway

pytestmark = pytest.mark.timeout(60)


class CrashingTransport:
    """Fails at its first run (a radio stack's error its own retries did not expect), then runs."""

    name = "ble"

    def __init__(self) -> None:
        self.runs = 0
        self.closed = 0

    async def run(self, sink: Any) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("radio stack fell over")
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed += 1


async def health(port: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get("http://127.0.0.1:%d/healthz" % port) as resp:
            body: dict[str, Any] = await resp.json()
            return body


async def test_a_transport_task_that_ends_is_logged_reported_down_and_restarted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_env(tmp_path)
    cfg.write_text(cfg.read_text().replace("[http]\nenabled = false", "[http]\nport = 0"))
    now = [0.0]
    gw = Gateway(load_config(cfg), health_monotonic=lambda: now[0])
    crashing = CrashingTransport()
    gw.transports.append(crashing)  # type: ignore[arg-type]
    gw.metrics.link_state.labels("ble").set(1)  # as a transport that was up says
    with caplog.at_level(logging.INFO, logger="gateway.service"):
        await gw.start()
        try:
            assert gw.http_port
            end = time.monotonic() + 5
            while "ended unexpectedly" not in caplog.text:
                assert time.monotonic() < end, caplog.text
                await asyncio.sleep(0.02)
            [record] = [r for r in caplog.records if "ended unexpectedly" in r.getMessage()]
            assert record.levelno == logging.ERROR
            assert "link ble ended unexpectedly (RuntimeError: radio stack fell over)" in record.getMessage()
            assert record.exc_info is not None  # with its traceback
            assert gw.metrics.value("civicedge_link_state", {"link": "ble"}) == 0
            failed = "link ble failed (RuntimeError: radio stack fell over); restarting it"
            body = await health(gw.http_port)
            assert body["status"] == "degraded"
            assert body["reasons"] == [failed] and body["severity"] == "warning", body
            # its only link: once down that long, every link is down, which is critical (all_links_down)
            now[0] += ALL_LINKS_DOWN_AFTER_S
            body = await health(gw.http_port)
            all_down = "every link is down (ble): nothing is received or stored; the devices keep their reports"
            assert body["reasons"] == [all_down, failed], body
            assert body["severity"] == "critical"
            end = time.monotonic() + 5
            while crashing.runs < 2:
                assert time.monotonic() < end, "not restarted"
                await asyncio.sleep(0.05)
            [restarted] = [r for r in caplog.records if r.getMessage() == "link ble restarted"]
            assert restarted.levelno == logging.INFO
            assert crashing.closed == 1  # closed before it was started again
            # restarted, not up until the transport says so (link_state 0), but no longer failed and giving
            # no reason, as BLE while its first scan runs: no outage, in the gateway's check and in /healthz
            # (which takes the links from that check, not from link_state)
            assert gw.metrics.value("civicedge_link_state", {"link": "ble"}) == 0
            body = await health(gw.http_port)
            assert body["reasons"] == [] and body["severity"] == "ok", body
        finally:
            await gw.stop()
    assert crashing.runs == 2 and crashing.closed == 2  # before the restart, and at stop


class ReturnsWhenCancelled:
    """A transport that swallows the cancel and returns (as bleak's own code may): not a failure at stop."""

    name = "ble"

    def __init__(self) -> None:
        self.runs = 0
        self.closed = 0

    async def run(self, sink: Any) -> None:
        self.runs += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return

    async def close(self) -> None:
        self.closed += 1


async def test_a_transport_that_returns_when_cancelled_is_not_restarted_at_stop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gw = Gateway(load_config(make_env(tmp_path)))
    quiet = ReturnsWhenCancelled()
    gw.transports.append(quiet)  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG, logger="gateway.service"):
        await gw.start()
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await gw.stop()
        took = time.monotonic() - started
        await asyncio.sleep(1.5)  # past LINK_RESTART_MIN_S: a restart would have run it again
    assert took < 10.0, took  # a stop that hangs; not restarting it is runs == 1 below, not a time
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == [], caplog.text
    assert "ended unexpectedly" not in caplog.text and "restarted" not in caplog.text
    assert quiet.runs == 1 and quiet.closed == 1


async def test_a_supervisor_being_cancelled_does_not_restart_a_transport_that_returned(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Cancelled other than through stop() (the event loop shutting down): the cancel is not lost."""
    gw = Gateway(load_config(make_env(tmp_path)))
    quiet = ReturnsWhenCancelled()
    gw.transports.append(quiet)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="gateway.service"):
        await gw.start()
        try:
            await asyncio.sleep(0.1)
            [task] = [t for t in gw._tasks if t.get_name() == "ble"]
            task.cancel()
            await asyncio.wait_for(asyncio.wait([task]), 1.0)
            assert task.done()
        finally:
            await gw.stop()
    assert "ended unexpectedly" not in caplog.text, caplog.text
    assert quiet.runs == 1
