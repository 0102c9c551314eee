"""Clients that do not read their answers: a connection whose client takes no byte of its answer is closed
after the stall timeout, and at the cap it yields its slot to a new client; a slow client that keeps reading
a large answer is not cut off (gateway.web.connlimit). Real aiohttp server, real sockets with small receive
buffers."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
from aiohttp import web

from gateway.web import connlimit
from gateway.web.app import HttpServer, start_http

pytestmark = pytest.mark.timeout(30)
# An answer larger than the kernel's send buffer (autotuned up to tcp_wmem's 4 MiB), sent in chunks like a
# CSV export: a client that does not read leaves the server's writer paused.
BIG = 8 * 1024 * 1024
CHUNK = 64 * 1024


def _app(size: int = BIG, sndbuf: int | None = None, chunk: int = CHUNK) -> web.Application:
    async def big(request: web.Request) -> web.StreamResponse:
        if sndbuf is not None:  # a small kernel send buffer (no autotuning): a small answer fills it
            sock = request.transport.get_extra_info("socket") if request.transport is not None else None
            assert sock is not None
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        resp = web.StreamResponse(headers={"Content-Type": "text/csv", "Content-Length": str(size)})
        await resp.prepare(request)
        for i in range(size // chunk):
            await resp.write(bytes([48 + i % 10]) * chunk)
        await resp.write_eof()
        return resp

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/healthz", healthz)
    return app


def _stalled_reader(port: int) -> socket.socket:
    """A client that asks for the big answer (twice, pipelined) and never reads."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 2)
    return s


def _cap(server: HttpServer) -> connlimit.ConnectionCap:
    assert server.site is not None and server.site.cap is not None
    return server.site.cap


async def _until(predicate: object, timeout: float) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _read_to_end(s: socket.socket) -> tuple[str, int]:
    """How the connection ends when read at full speed ("reset", "eof" or "open": nothing for 2 s) and the bytes read."""
    s.settimeout(2)
    received = 0
    try:
        while chunk := s.recv(65536):
            received += len(chunk)
    except ConnectionResetError:
        return "reset", received
    except socket.timeout:
        return "open", received
    return "eof", received


async def test_with_the_cap_filled_by_clients_that_do_not_read_a_new_client_gets_healthz() -> None:
    """Fails before: every slot busy writing, none evictable: 503 too_many_connections until they hang up."""
    server = await start_http(_app(), host="127.0.0.1", port=0, max_connections=8)
    stalled = [_stalled_reader(server.port) for _ in range(8)]
    try:
        cap = _cap(server)
        assert await _until(lambda: cap.open == 8, 5)
        await asyncio.sleep(getattr(connlimit, "STALL_EVICT_S", 2.0) + 0.5)  # their writes stalled long enough
        started = time.monotonic()
        async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as r:
            assert r.status == 200, await r.text()
            assert await r.json() == {"status": "ok"}
        assert time.monotonic() - started < 3
        assert cap.evicted >= 1 and cap.refused == 0
        assert cap.open <= 8
    finally:
        for s in stalled:
            s.close()
        await server.stop()


async def test_a_connection_whose_client_reads_nothing_is_closed_after_the_stall_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails before: no send timeout, the connection (and its handler, blocked in drain) stayed open."""
    monkeypatch.setattr(connlimit, "STALL_TIMEOUT_S", 1.0, raising=False)  # (no such constant before)
    server = await start_http(_app(), host="127.0.0.1", port=0)
    s = _stalled_reader(server.port)
    try:
        cap = _cap(server)
        assert await _until(lambda: cap.open == 1, 5)
        await asyncio.sleep(0.5)
        assert cap.open == 1  # not before the timeout
        assert await _until(lambda: cap.open == 0, 3), "the stalled connection is still open"
        assert cap.stalled == 1
        # The client sees the connection end, the answers cut short (the unsent rest was dropped).
        ended, received = await asyncio.get_running_loop().run_in_executor(None, _read_to_end, s)
        assert ended in ("reset", "eof") and received < 2 * BIG, (ended, received)
    finally:
        s.close()
        await server.stop()


async def test_a_slow_client_that_keeps_reading_a_large_answer_is_not_cut_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """64 KiB/s with pauses of 0.25 s and a 1-s stall timeout: all of it arrives. The answer is written at once, so
    the writer stays paused for most of the ~6 s: progress is measured, not the time paused."""
    monkeypatch.setattr(connlimit, "STALL_TIMEOUT_S", 1.0)
    size = 384 * 1024  # ~6 s at 64 KiB/s
    server = await start_http(_app(size, sndbuf=16 * 1024, chunk=size), host="127.0.0.1", port=0)
    loop = asyncio.get_running_loop()
    paused: list[float] = []  # loop times of each pause and resume
    pause_writing, resume_writing = connlimit._Tracked.pause_writing, connlimit._Tracked.resume_writing

    def timed_pause(self: connlimit._Tracked) -> None:
        paused.append(loop.time())
        pause_writing(self)

    def timed_resume(self: connlimit._Tracked) -> None:
        paused.append(loop.time())
        resume_writing(self)

    monkeypatch.setattr(connlimit._Tracked, "pause_writing", timed_pause)
    monkeypatch.setattr(connlimit._Tracked, "resume_writing", timed_resume)

    def slow_get() -> bytes:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(5)
            s.connect(("127.0.0.1", server.port))
            s.sendall(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while True:
                got = 0
                while got < 16 * 1024:  # 16 KiB each quarter second
                    chunk = s.recv(16 * 1024 - got)
                    if not chunk:
                        return answer
                    answer += chunk
                    got += len(chunk)
                time.sleep(0.25)

    try:
        started = time.monotonic()
        answer = await loop.run_in_executor(None, slow_get)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert len(body) == size
        assert time.monotonic() - started > 3  # it was slow: the writer waited on the reader throughout
        longest = max(resume - pause for pause, resume in zip(paused[::2], paused[1::2]))
        assert longest > 2 * connlimit.STALL_TIMEOUT_S, paused  # a pause far beyond the stall timeout, kept
        assert _cap(server).stalled == 0
    finally:
        await server.stop()


async def test_files_are_sent_through_the_write_buffer_so_a_stalled_file_reader_is_seen(tmp_path: object) -> None:
    """Security review: the same attack on /static/dashboard.js held every slot, since aiohttp sent files with
    the kernel's sendfile, past the connection's write buffer (the stall was never seen). Fails before."""
    from pathlib import Path

    static = Path(str(tmp_path)) / "static"
    static.mkdir()
    (static / "big.js").write_bytes(b"x" * BIG)
    app = _app()
    app.router.add_static("/static", static)
    server = await start_http(app, host="127.0.0.1", port=0, max_connections=8)
    stalled = []
    for _ in range(8):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", server.port))
        s.sendall(b"GET /static/big.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 2)
        stalled.append(s)
    try:
        cap = _cap(server)
        assert await _until(lambda: cap.open == 8, 5)
        await asyncio.sleep(connlimit.STALL_EVICT_S + 0.5)
        async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as r:
            assert r.status == 200, await r.text()
        assert cap.evicted >= 1 and cap.refused == 0
    finally:
        for s in stalled:
            s.close()
        await server.stop()
