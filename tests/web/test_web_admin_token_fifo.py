"""The admin token file replaced by a FIFO on a running gateway (``rm admin.token; mkfifo -m 600
admin.token``): the token is unusable, so the admin API fails closed with 503 token_file_unusable and
/healthz says why. Before, the web layer opened the FIFO on the event loop and the whole gateway hung
(audit H3): /healthz timed out and SIGTERM was not acted on."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest

from .support import ADMIN_TOKEN, pty_gateway_config
from gateway.service import Gateway

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Any, Path]]:
    master, slave = os.openpty()
    gw = Gateway(pty_gateway_config(tmp_path, "gw-fifo", slave, admin=True))
    await gw.start()
    token_file = tmp_path / "admin.token"
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{gw.http_port}",
                                         timeout=aiohttp.ClientTimeout(total=5)) as http:
            yield http, token_file
    finally:
        if token_file.exists() and not token_file.is_file():  # a gateway still blocked on it (the bug) gets a writer
            try:
                os.close(os.open(token_file, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        await gw.stop()
        os.close(master)
        os.close(slave)


async def test_a_fifo_token_file_fails_closed_without_hanging_the_gateway(running: tuple[Any, Path]) -> None:
    http, token_file = running
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.get("/api/admin/retention", headers=headers) as r:
        assert r.status == 200
    token_file.unlink()
    os.mkfifo(token_file, 0o600)
    await asyncio.sleep(1.2)  # past the settle time: the next look reads the file
    end = time.monotonic() + 10
    while True:
        async with http.get("/api/admin/retention", headers=headers) as r:
            status, body = r.status, await r.json()
        if status == 503 or time.monotonic() > end:
            break
        await asyncio.sleep(0.2)
    assert status == 503 and body["error"]["code"] == "token_file_unusable", body
    assert "is a FIFO, not a regular file" in body["error"]["message"]
    async with http.get("/healthz") as r:
        reasons = (await r.json())["reasons"]
    assert any("admin token file unusable" in reason and "is a FIFO, not a regular file" in reason
               for reason in reasons), reasons
