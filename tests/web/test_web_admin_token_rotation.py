"""Replacing the admin token file on a running gateway: the new token works and the old one is
refused without a restart; an unusable new file fails closed (every admin call 503, the old token too:
it may be why the file was replaced), with an ERROR and a /healthz reason."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest

from .support import ADMIN_TOKEN, pty_gateway_config
from gateway.service import Gateway

pytestmark = pytest.mark.timeout(60)
NEW_TOKEN = "9f2c41d7e8b0a6c35d1e4f7a2b8c9d0e"


def _replace(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` beside ``path`` and rename it over ``path``, as an operator's script would."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Any, Path]]:
    master, slave = os.openpty()
    gw = Gateway(pty_gateway_config(tmp_path, "gw-tok", slave, admin=True))
    await gw.start()
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{gw.http_port}") as http:
            yield gw, http, tmp_path / "admin.token"
    finally:
        await gw.stop()
        os.close(master)
        os.close(slave)


async def _status(http: Any, token: str) -> int:
    async with http.get("/api/admin/retention", headers={"Authorization": f"Bearer {token}"}) as r:
        return int(r.status)


async def _until(check: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < end, "not within %.0f s" % timeout
        await asyncio.sleep(0.2)


async def test_a_replaced_token_file_takes_effect_without_a_restart(
    running: tuple[Gateway, Any, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, http, token_file = running
    caplog.set_level(logging.INFO)
    assert await _status(http, ADMIN_TOKEN) == 200
    assert await _status(http, NEW_TOKEN) == 401
    _replace(token_file, NEW_TOKEN + "\n")

    async def rotated() -> bool:
        return await _status(http, NEW_TOKEN) == 200

    await _until(rotated)
    assert await _status(http, ADMIN_TOKEN) == 401
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "token file" in r.getMessage()]
    assert warnings == ["admin token file %s changed: its new token is in use, the previous one is refused" % token_file]
    assert ADMIN_TOKEN not in caplog.text and NEW_TOKEN not in caplog.text
    async with http.get("/healthz") as r:
        assert not any("admin token" in reason for reason in (await r.json())["reasons"])


@pytest.mark.parametrize(("content", "mode", "why"), [
    ("aaaaaaaaaaaaaaaaaaaaaaaa\n", 0o600, "looks like a placeholder"),
    # guessable (the audit's example): taken before, as 16 characters that are no placeholder
    ("password12345678\n", 0o600, "too easy to guess"),
    (NEW_TOKEN + "\n", 0o644, "is readable by other users (mode 644); run: chmod 600"),
    (None, 0o600, "cannot be read (No such file or directory)"),
])
async def test_an_unusable_new_file_fails_closed_with_an_error_and_a_health_reason(
    running: tuple[Gateway, Any, Path], caplog: pytest.LogCaptureFixture, content: str | None, mode: int, why: str
) -> None:
    _, http, token_file = running
    caplog.set_level(logging.INFO)
    if content is None:
        token_file.unlink()
    else:
        _replace(token_file, content, mode)

    async def flagged() -> bool:
        async with http.get("/healthz") as r:
            body = await r.json()
            return r.status == 503 and any(why in reason for reason in body["reasons"])

    await _until(flagged)
    assert await _status(http, ADMIN_TOKEN) == 503  # the previous token no longer works (it may have leaked)
    assert await _status(http, NEW_TOKEN) == 503
    await asyncio.sleep(1.2)  # more looks at the same file: still one ERROR
    assert await _status(http, ADMIN_TOKEN) == 503
    # one ERROR from the token check (the refused calls' own 503 lines are the web layer's, rate-limited)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name == "gateway.web.auth"]
    assert len(errors) == 1 and why in errors[0] and "every admin call is refused" in errors[0], errors
    assert ADMIN_TOKEN not in caplog.text and NEW_TOKEN not in caplog.text
    if content is not None and mode == 0o644:
        token_file.chmod(0o600)  # the fix the message names: the new token is then taken

        async def rotated() -> bool:
            return await _status(http, NEW_TOKEN) == 200

        await _until(rotated)
        assert await _status(http, ADMIN_TOKEN) == 401
        async with http.get("/healthz") as r:
            assert not any("admin token" in reason for reason in (await r.json())["reasons"])


async def test_a_new_file_with_a_future_modification_time_is_taken(running: tuple[Gateway, Any, Path]) -> None:
    """A token file copied with its times kept (cp -p, rsync -t) from a host whose clock is ahead: the
    settle time is measured by the gateway, not by the file's mtime. Before, such a file was never read
    and the old token stayed valid with no ERROR and no /healthz reason (review)."""
    _, http, token_file = running
    _replace(token_file, NEW_TOKEN + "\n")
    ahead = time.time() + 3600
    os.utime(token_file, (ahead, ahead))

    async def rotated() -> bool:
        return await _status(http, NEW_TOKEN) == 200

    await _until(rotated)
    assert await _status(http, ADMIN_TOKEN) == 401
