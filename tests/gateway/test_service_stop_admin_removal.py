"""The gateway's stop during an admin API device removal's wait (third review L4): the stop waits for the removal
(``RegistryAdmin.close``, bounded) before it closes the registry, so the removal ends removed or put back, never
on a registry closed under it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import make_env

from gateway.config import load_config
from gateway.registry import Registry
from gateway.service import STOP_STEP_S, Gateway

pytestmark = pytest.mark.timeout(60)

PORT = 21917  # this test's own (the helper's range)
TOKEN = "4424e6724442dd8679c6bbe6a9001824"


def _record(registry: Path, device: str) -> tuple[bool, bool] | None:
    reg = Registry(registry, create=False)
    try:
        rec = reg.lookup(device)
        return None if rec is None else (rec.retired, rec.removing)
    finally:
        reg.close()


async def test_a_stop_during_the_removals_wait_lets_it_finish_before_the_registry_closes(tmp_path: Path) -> None:
    """The wait outlasts the web surface's own shutdown bound (its handler is cancelled, its worker thread goes
    on). Before, the registry was closed under it: the removal failed on the closed connection and the device
    was left retired for its removal."""
    (tmp_path / "admin.token").write_text(TOKEN + "\n")
    (tmp_path / "admin.token").chmod(0o600)
    cfg_path = make_env(tmp_path)
    cfg_path.write_text(cfg_path.read_text().replace(
        "[http]\nenabled = false", "[http]\nport = %d\nadmin_token_file = \"admin.token\"" % PORT))
    gw = Gateway(load_config(cfg_path))
    registry = tmp_path / "data" / "registry"
    # Past the web surface's shutdown (its bounded wait for open requests, then the cleanup's: about two steps,
    # 6 s, measured), within the stop's wait for admin writes after it (one step more).
    wait_s = 2 * STOP_STEP_S + 1.0

    async def settled(device: str) -> None:  # the ingest's commits, slow to come
        await asyncio.sleep(wait_s)

    gw.ingest.settled = settled  # type: ignore[method-assign]  # before start: the app takes it then
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
            with contextlib.suppress(aiohttp.ClientError):  # its answer may be cut off by the stop
                (await removal).release()
    finally:
        if not stopped:
            await gw.stop()
    assert _record(registry, "bin-2") is None  # removed, not left retired for its removal
    assert not (registry / "keys" / "bin-2.key").exists()
