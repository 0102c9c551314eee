"""The gateway's stop during an admin API device removal's wait (third review L4, fifth review M1, L6): the stop
waits for the removal (``RegistryAdmin.close``, bounded) before it closes the registry, so the removal ends removed
or put back, never on a registry closed under it; and its audit line is written although its request's handler
was cancelled by the web surface's shutdown before it ended."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import make_env

from gateway.config import load_config
from gateway.registry import Registry
from gateway.service import Gateway
from gateway.web.source import RegistryAdmin

pytestmark = pytest.mark.timeout(60)

PORT = 22117  # this test's own (the helper's range)
TOKEN = "4424e6724442dd8679c6bbe6a9001824"


def _record(registry: Path, device: str) -> tuple[bool, bool] | None:
    reg = Registry(registry, create=False)
    try:
        rec = reg.lookup(device)
        return None if rec is None else (rec.retired, rec.removing)
    finally:
        reg.close()


async def test_a_stop_during_the_removals_wait_lets_it_finish_before_the_registry_closes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The wait lasts until the stop's wait for admin writes began, which comes after the web surface's shutdown
    (its handler is cancelled then, its worker thread goes on): an event, not a measured duration. Before 990f4cc
    the registry was closed under it: the removal failed on the closed connection and the device was left retired
    for its removal. Before the fifth review's M1 fix the removal left no audit line (the cancelled handler wrote
    none)."""
    (tmp_path / "admin.token").write_text(TOKEN + "\n")
    (tmp_path / "admin.token").chmod(0o600)
    cfg_path = make_env(tmp_path)
    cfg_path.write_text(cfg_path.read_text().replace(
        "[http]\nenabled = false", "[http]\nport = %d\nadmin_token_file = \"admin.token\"" % PORT))
    gw = Gateway(load_config(cfg_path))
    registry = tmp_path / "data" / "registry"
    loop = asyncio.get_running_loop()
    closing = asyncio.Event()
    order: list[str] = []
    close = RegistryAdmin.close

    def signalling_close(self: RegistryAdmin, timeout_s: float) -> bool:  # on the stop's worker thread
        order.append("admin close")
        loop.call_soon_threadsafe(closing.set)
        return close(self, timeout_s)

    monkeypatch.setattr(RegistryAdmin, "close", signalling_close)

    async def settled(device: str) -> None:  # the ingest's commits, coming once the stop waits for admin writes
        await asyncio.wait_for(closing.wait(), 40)
        order.append("settled")

    gw.ingest.settled = settled  # type: ignore[method-assign]  # before start: the app takes it then
    caplog.set_level(logging.WARNING, logger="gateway.web.admin_api")
    await gw.start()
    stopped = False
    try:
        async with aiohttp.ClientSession() as http:
            removal = asyncio.ensure_future(http.delete(
                "http://127.0.0.1:%d/api/admin/devices/bin-2" % PORT, headers={"Authorization": "Bearer " + TOKEN}))
            deadline = time.monotonic() + 10
            while _record(registry, "bin-2") != (True, True):
                assert time.monotonic() < deadline, "bin-2 is not retired for its removal"
                await asyncio.sleep(0.02)
            await gw.stop()
            stopped = True
            with contextlib.suppress(aiohttp.ClientError):  # its answer is cut off by the stop
                (await removal).release()
    finally:
        if not stopped:
            await gw.stop()
    assert order == ["admin close", "settled"]  # the removal ended within the stop's wait for it
    assert _record(registry, "bin-2") is None  # removed, not left retired for its removal
    assert not (registry / "keys" / "bin-2.key").exists()
    audit = [r.getMessage() for r in caplog.records if r.name == "gateway.web.admin_api"]
    assert [m for m in audit if m.startswith("admin API: removed device bin-2 (")
            and m.endswith("[from 127.0.0.1]")], audit
