"""A flood of idle HTTP connections must not use up the gateway's file descriptors: /healthz still
answers and a serial frame is still stored (the gateway runs in a child under a low open-file limit)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.web.app import start_http
from gateway.web import connlimit
from gateway.web.connlimit import BACKLOG, FD_RESERVE, MAX_LINGERING, connection_cap, fd_limit_target

pytestmark = pytest.mark.timeout(90)
REPO = Path(__file__).resolve().parents[2]
FD_LIMIT = 256

# The child: a real Gateway (pty serial link, HTTP on a free port) under RLIMIT_NOFILE = FD_LIMIT. It
# prints its port, then on a line on stdin writes one signed report frame to the pty and prints
# "stored" once the report is in the store.
CHILD = textwrap.dedent("""
    import asyncio, os, sys, time
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from tests.web.support import pty_gateway_config
    from gateway.protocol.cobs import cobs_encode
    from gateway.protocol.frame import FRAME_REPORT, build_frame
    from gateway.service import Gateway

    async def main() -> None:
        master, slave = os.openpty()
        gw = Gateway(pty_gateway_config(Path(sys.argv[2]), "gw-flood", slave))
        gw.registry.add("sl-77", kind="streetlight", zone="harbour", lat="51.9", lon="4.48")
        key = gw.registry.key("sl-77")
        await gw.start()
        print(gw.http_port, flush=True)
        print("fds at start", len(os.listdir("/proc/self/fd")), file=sys.stderr, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)
        now = int(time.time())
        frame = build_frame(FRAME_REPORT, "sl-77", 1, {"t": "win", "k": "streetlight", "w": now - now % 900 - 900,
                                                     "l": 900, "m": {"lux": 40, "lvl": 100, "lamp": 0}}, key)
        os.write(master, cobs_encode(frame) + b"\\x00")
        deadline = time.monotonic() + 20
        while gw.metrics.value("civicedge_reports_stored_total") < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        print("stored" if gw.metrics.value("civicedge_reports_stored_total") >= 1 else "not stored", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        await gw.stop()

    asyncio.run(main())
""")


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def _healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return int(r.status)


def test_a_flood_of_idle_connections_leaves_healthz_and_serial_ingest_working(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1000:
        pytest.skip("the test process itself needs ~500 descriptors for the flood")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), str(REPO), str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_low_fd_limit)
    flood: list[socket.socket] = []
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        for _ in range(2 * FD_LIMIT):  # idle: connected, never a byte sent
            try:
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        time.sleep(0.5)
        assert _healthz(port) == 200
        child.stdin.write("frame\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "stored"
        assert _healthz(port) == 200
        child.stdin.write("stop\n")
        child.stdin.flush()
        _, err = child.communicate(timeout=30)
    finally:
        for s in flood:
            s.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "Too many open files" not in err
    assert child.returncode == 0, err[-2000:]


def test_the_cap_leaves_room_under_the_open_file_limit() -> None:
    assert connection_cap(256, 1 << 20) == 256
    assert connection_cap(256, FD_LIMIT) == FD_LIMIT - FD_RESERVE - 2 * BACKLOG - MAX_LINGERING
    assert connection_cap(256, 10) >= 1


async def _busy_app(inside: list[None] | None = None) -> tuple[web.Application, asyncio.Event]:
    """An app whose /slow waits for the event returned (each request entering it adds to ``inside``)."""
    release = asyncio.Event()

    async def slow(_request: web.Request) -> web.Response:
        if inside is not None:
            inside.append(None)
        await release.wait()
        return web.Response(text="done")

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/ok", ok)
    return app, release


async def _all_inside(inside: list[None], n: int) -> None:
    """Wait until ``n`` requests are in /slow: every connection busy, not only open (a fixed 0.5 s was too
    short for eight on a loaded machine)."""
    for _ in range(200):
        if len(inside) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("only %d of the %d requests reached the handler in 10 s" % (len(inside), n))


async def test_at_the_cap_an_idle_connection_is_closed_for_a_new_one() -> None:
    app, _ = await _busy_app()
    server = await start_http(app, host="127.0.0.1", port=0, max_connections=8)
    try:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(20)]
        await asyncio.sleep(0.2)
        assert server.site is not None and server.site.cap is not None
        assert server.site.cap.open <= 8
        async with aiohttp.ClientSession() as http, http.get(server.url + "/ok") as r:
            assert r.status == 200 and await r.text() == "ok"
        assert server.site.cap.evicted >= 13 and server.site.cap.refused == 0
        for _, w in idle:
            w.close()
    finally:
        await server.stop()


async def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503_at_once(
        caplog: pytest.LogCaptureFixture) -> None:
    inside: list[None] = []
    app, release = await _busy_app(inside)
    server = await start_http(app, host="127.0.0.1", port=0, max_connections=8)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            busy = [asyncio.ensure_future(http.get(server.url + "/slow")) for _ in range(8)]
            await _all_inside(inside, 8)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 503 ") and b"too_many_connections" in answer
            writer.close()
            for _ in range(3):
                _, w = await asyncio.open_connection("127.0.0.1", server.port)
                w.close()
            await asyncio.sleep(0.2)
            assert server.site is not None and server.site.cap is not None and server.site.cap.refused >= 2
            refused = [r for r in caplog.records if "refused an HTTP connection" in r.getMessage()]
            assert len(refused) == 1  # rate-limited
            release.set()
            for f in busy:
                async with await f as r:
                    assert r.status == 200
            async with http.get(server.url + "/ok") as r:
                assert r.status == 200
    finally:
        await server.stop()


def test_the_open_file_limit_is_raised_only_as_far_as_the_connections_need() -> None:
    inf = resource.RLIM_INFINITY
    needed = 256 + FD_RESERVE + 2 * BACKLOG + MAX_LINGERING
    assert fd_limit_target(256, 1024, 524288) == 1024  # enough already: kept, never raised to the hard limit
    assert fd_limit_target(256, 256, 524288) == needed < 1024  # pyserial's select() needs fds < 1024
    assert fd_limit_target(256, 256, inf) == needed  # a finite target under an infinite hard limit
    assert fd_limit_target(256, 256, 300) == 300  # at most the hard limit
    assert fd_limit_target(256, inf, inf) == inf
    assert fd_limit_target(900, 256, 1 << 20) == 900 + FD_RESERVE + 2 * BACKLOG + MAX_LINGERING


async def test_refused_clients_that_sent_their_request_at_once_read_the_503() -> None:
    inside: list[None] = []
    app, release = await _busy_app(inside)
    server = await start_http(app, host="127.0.0.1", port=0, max_connections=4)
    loop = asyncio.get_running_loop()

    def raw_get() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            return answer

    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            busy = [asyncio.ensure_future(http.get(server.url + "/slow")) for _ in range(4)]
            await _all_inside(inside, 4)
            answers = []
            for _ in range(10):  # MAX_LINGERING at once at most: 10 in parallel
                answers += await asyncio.gather(*(loop.run_in_executor(None, raw_get) for _ in range(10)))
            assert all(a.startswith(b"HTTP/1.1 503 ") and b"too_many_connections" in a for a in answers), \
                [a[:40] for a in answers if not a.startswith(b"HTTP/1.1 503 ")][:5]
            release.set()
            for f in busy:
                async with await f as r:
                    assert r.status == 200
    except ConnectionResetError as exc:
        pytest.fail("a refused client got a reset instead of the 503: %s" % exc)
    finally:
        await server.stop()


async def test_at_the_cap_the_least_recently_active_idle_connection_is_closed() -> None:
    app, _ = await _busy_app()
    server = await start_http(app, host="127.0.0.1", port=0, max_connections=4)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as poller:
            async with poller.get(server.url + "/ok") as r:  # the poller's keep-alive connection: first accepted
                assert r.status == 200
            idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
            # a partly sent request on the last one: closed only when no other is idle
            idle[2][1].write(b"GET /ok HTTP/1.1\r\nHost: 127.0")
            await asyncio.sleep(0.2)
            async with poller.get(server.url + "/ok") as r:  # the poller is now the most recently active
                assert r.status == 200
            await asyncio.sleep(0.05)
            for _ in range(2):  # each at the cap: closes the least recently active idle connection
                await asyncio.open_connection("127.0.0.1", server.port)
            await asyncio.sleep(0.2)
            assert [await _closed(reader) for reader, _ in idle] == [True, True, False]
            async with poller.get(server.url + "/ok") as r:  # the poller's connection was kept
                assert r.status == 200
            assert server.site is not None and server.site.cap is not None and server.site.cap.evicted == 2
    finally:
        await server.stop()


async def test_closed_connections_are_not_kept_below_the_cap() -> None:
    """Fails before: the cap dropped a closed connection's request handler only when it reached the cap
    (256 by default), so up to that many dead handlers were kept."""
    app, _ = await _busy_app()
    server = await start_http(app, host="127.0.0.1", port=0)
    try:
        for _ in range(40):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await reader.read()).endswith(b"ok")
            writer.close()
            await writer.wait_closed()
        for _ in range(20):  # closed by the client, no request
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.2)
        assert server.site is not None and server.site.cap is not None
        assert len(server.site.cap._live) == 0, len(server.site.cap._live)
        async with aiohttp.ClientSession() as http, http.get(server.url + "/ok") as r:
            assert r.status == 200 and await r.text() == "ok"
    finally:
        await server.stop()


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 0.1) == b""
    except asyncio.TimeoutError:
        return False


async def test_without_the_aiohttp_internals_the_site_serves_uncapped_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(connlimit, "_HANDLER_INTERNALS", connlimit._HANDLER_INTERNALS + ("_gone_in_this_aiohttp",))
    app, _ = await _busy_app()
    server = await start_http(app, host="127.0.0.1", port=0, max_connections=4)
    try:
        assert server.site is not None and server.site.cap is None
        warned = [r for r in caplog.records if "connection cap disabled" in r.getMessage()]
        assert warned and warned[0].levelno == logging.WARNING and "_gone_in_this_aiohttp" in warned[0].getMessage()
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(8)]
        async with aiohttp.ClientSession() as http, http.get(server.url + "/ok") as r:
            assert r.status == 200  # served, uncapped
        for _, w in idle:
            w.close()
    finally:
        await server.stop()


def test_http_max_connections_is_a_config_key(tmp_path: Path) -> None:
    from gateway.config.loader import parse_config
    from gateway.errors import ConfigError

    def http(**keys: object):  # type: ignore[no-untyped-def]
        return parse_config({"gateway": {"id": "gw", "data_dir": str(tmp_path)}, "http": keys}, source=None).http

    assert http().max_connections == 256
    assert http(max_connections=1000).max_connections == 1000
    with pytest.raises(ConfigError, match="max_connections"):
        http(max_connections=2)
