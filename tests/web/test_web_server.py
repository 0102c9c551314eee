"""start_http: free port, header limits, no access log carrying request lines."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from .support import ADMIN_TOKEN, NOW, Fleet
from gateway.resources import load_policy
from gateway.web.app import create_app, start_http

pytestmark = pytest.mark.timeout(30)


async def test_oversized_header_is_refused_and_requests_are_not_access_logged(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=0.5)
    try:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/api/devices?zone=centre",
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
                assert r.status == 200
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /api/devices HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout=5)
        assert status.split()[1] in (b"400", b"431")
        writer.close()
        await writer.wait_closed()
    finally:
        await server.stop()
    # No access log line: a mistyped token in a URL or header must not reach the logs.
    assert "zone=centre" not in caplog.text
    assert ADMIN_TOKEN not in caplog.text


async def test_limits_hold_under_a_plain_app_runner(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    """The gateway service may serve the app with its own ``web.AppRunner(app)``: the idle
    timeout, header limits and silent access log must still apply."""
    from aiohttp import web

    caplog.set_level(logging.DEBUG)
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: float(NOW), keepalive_timeout_s=0.5)
    runner = web.AppRunner(app, shutdown_timeout=0.5)  # aiohttp defaults otherwise (keep-alive 3630 s)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /openapi.json?secret=x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        # Refused (an unknown parameter), on a connection kept alive, and logged nowhere.
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 400")
        # The idle keep-alive connection is closed by the server well before aiohttp's default.
        t0 = asyncio.get_running_loop().time()
        await asyncio.wait_for(reader.read(), timeout=10)  # returns at EOF
        assert asyncio.get_running_loop().time() - t0 < 5
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout=5)
        assert status.split()[1] in (b"400", b"431")
        writer.close()
        # A client that never finishes its headers (slowloris) is cut off too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/devices HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        await writer.drain()
        t0 = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        assert asyncio.get_running_loop().time() - t0 < 5
        writer.close()
    finally:
        await runner.cleanup()
    assert "secret=x" not in caplog.text


async def test_a_request_that_cannot_be_parsed_is_logged_in_one_line_without_its_bytes(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's own message for a header or URL over the limit quotes it, with a traceback: a
    token sent that way must not reach the gateway's log."""
    caplog.set_level(logging.DEBUG)
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=0.5)
    secret = "SECRET-" + ADMIN_TOKEN
    requests = [
        b"GET /api/admin/devices HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + secret.encode() + b"a" * 5000
        + b"\r\n\r\n",
        b"GET /api/devices?token=" + secret.encode() + b"a" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, secret.encode()) for i in range(100))
        + b"\r\n",
    ]
    try:
        for request in requests:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request)
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), timeout=5)
            assert status.split()[1] in (b"400", b"414", b"431")
            writer.close()
    finally:
        await server.stop()
    assert secret not in caplog.text and "Traceback" not in caplog.text
    refused = [r for r in caplog.records if r.getMessage().startswith("refused a malformed HTTP request from")]
    assert len(refused) == len(requests) and all(r.levelno == logging.INFO for r in refused)


async def test_a_request_line_over_the_limit_gets_aiohttps_own_answer_as_documented(fleet: Fleet) -> None:
    """QA: a 5000-byte query string gets aiohttp's plain-text 400 quoting the line, without JSON or
    the security headers. aiohttp answers it before any application code runs and has no supported
    hook to shape it (docs/api.md, "Requests aiohttp cannot parse"); this pins what that section
    says, so the section is revisited when an aiohttp upgrade changes it."""
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /opendata/readings.csv?zone=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=5)  # the connection is closed after it
        writer.close()
    finally:
        await server.stop()
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    assert status.split()[1] == "400"
    assert headers["content-type"].startswith("text/plain")
    assert "content-security-policy" not in headers and "x-content-type-options" not in headers
    assert body.startswith(b"Got more than 4096 bytes") and b"/opendata/readings.csv?zone=aaa" in body
    assert b"a" * 101 not in body  # the first 100 bytes of the line, no more
    api_doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    assert "Got more than 4096 bytes when reading" in api_doc and "aio-libs/aiohttp#3287" in api_doc
