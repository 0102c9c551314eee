"""The admin token file's settle time counts from the file's last change, not from the first call that
notices it: on an idle gateway the first admin call made 2 s after the rename (docs/api.md, "Rotating the
token") uses the new token. A file still being written in place is not read half-written."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest

from .support import ADMIN_TOKEN, pty_gateway_config
from gateway.service import Gateway
from gateway.web.auth import TOKEN_RECHECK_S

pytestmark = pytest.mark.timeout(60)
NEW_TOKEN = "9f2c41d7e8b0a6c35d1e4f7a2b8c9d0e"


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Any, Path]]:
    master, slave = os.openpty()
    gw = Gateway(pty_gateway_config(tmp_path, "gw-settle", slave, admin=True))
    await gw.start()
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{gw.http_port}") as http:
            yield http, tmp_path / "admin.token"
    finally:
        await gw.stop()
        os.close(master)
        os.close(slave)


async def _status(http: Any, token: str) -> int:
    async with http.get("/api/admin/retention", headers={"Authorization": f"Bearer {token}"}) as r:
        return int(r.status)


async def test_the_first_call_2_s_after_a_rename_on_an_idle_gateway_uses_the_new_token(
    running: tuple[Any, Path],
) -> None:
    """Before, the settle second started at that first call: it got 401 wrong_token and only a later
    call succeeded (docs said to allow about 2 s)."""
    http, token_file = running
    assert await _status(http, ADMIN_TOKEN) == 200
    tmp = token_file.with_name("admin.token.new")
    tmp.write_text(NEW_TOKEN + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, token_file)
    await asyncio.sleep(2.0)  # idle: no call, no /healthz looks at the file meanwhile
    assert await _status(http, NEW_TOKEN) == 200
    assert await _status(http, ADMIN_TOKEN) == 401


async def test_a_file_being_written_in_place_is_not_read_half_written(
    running: tuple[Any, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The race the settle time is for: a call made while the file is half-written keeps the old token
    (not 503 for a too-short token), and the finished file is taken without any ERROR."""
    http, token_file = running
    caplog.set_level(logging.INFO)
    await asyncio.sleep(TOKEN_RECHECK_S + 0.1)  # the next call looks at the file
    with token_file.open("w") as f:  # as `echo > file` or an editor: same inode, written in two steps
        f.write(NEW_TOKEN[:8])
        f.flush()
        assert await _status(http, ADMIN_TOKEN) == 200  # seen changed just now: not read yet
        await asyncio.sleep(0.3)
        f.write(NEW_TOKEN[8:] + "\n")
    end = asyncio.get_running_loop().time() + 10
    while await _status(http, NEW_TOKEN) != 200:
        assert asyncio.get_running_loop().time() < end, "the finished file was not taken"
        await asyncio.sleep(0.2)
    assert await _status(http, ADMIN_TOKEN) == 401
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name == "gateway.web.auth"]
    assert errors == []
