"""``DELETE /api/admin/devices/{id}`` against what happens during its wait (third review M1, L1, L4, L8): a retire
meanwhile answers 200 and stands; a device retired by another process a moment before is refused at once by the
verifier; the gateway's loop stopping meanwhile is 503 ``not_settled``, not a 500; the gateway's stop waits for
a removal before it closes the registry (``RegistryAdmin.close``)."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from .support import Fleet, admin_headers
from .removal_support import PATH, WIN, gateway_client, retired, stored, until  # noqa: F401 (a fixture)
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportStore
from gateway.web.context import CONTEXT_KEY
from gateway.web.errors import Unavailable
from gateway.web.source import RegistryAdmin


def _admin(client: TestClient) -> RegistryAdmin:
    admin = client.server.app[CONTEXT_KEY].admin
    assert isinstance(admin, RegistryAdmin)
    return admin


async def test_a_retire_during_the_removal_wait_answers_200_and_stands(gateway_client: TestClient,
                                                                       fleet: Fleet) -> None:
    """M1: before, the retire answered 409 already_retired and the removal's put-back then took the flag off:
    the gateway went on accepting (and acknowledging) a board the operator was told is retired."""
    release = threading.Event()
    held = asyncio.ensure_future(fleet.ingest.run_in_store(release.wait, 30))
    fleet.feed("sl-03", WIN)  # its commit waits for the store thread: the removal waits for it
    removal = asyncio.ensure_future(gateway_client.delete(PATH % "sl-03", headers=admin_headers()))
    await until(lambda: retired(fleet, "sl-03"), "retired for its removal")
    resp = await gateway_client.post(PATH % "sl-03" + "/retire", headers=admin_headers())
    assert resp.status == 200, await resp.text()
    release.set()
    await held
    resp = await removal
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "heard_from", error
    assert "(it was retired meanwhile (by another request or process); it stays retired)" in error["message"]
    rec = fleet.registry.get("sl-03")
    assert rec.retired and not rec.removing


async def test_a_retire_during_the_wait_of_a_device_never_heard_from_is_409_retired(
        gateway_client: TestClient, fleet: Fleet) -> None:
    """M1: nothing stored; before, the retire was refused and the device then deleted under the operator."""
    admin = _admin(gateway_client)
    go_on = asyncio.Event()

    async def settled(device: str) -> None:
        await go_on.wait()

    admin._settled = settled
    removal = asyncio.ensure_future(gateway_client.delete(PATH % "sl-03", headers=admin_headers()))
    await until(lambda: retired(fleet, "sl-03"), "retired for its removal")
    resp = await gateway_client.post(PATH % "sl-03" + "/retire", headers=admin_headers())
    assert resp.status == 200, await resp.text()
    go_on.set()
    resp = await removal
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "retired", error
    assert fleet.registry.get("sl-03").retired and fleet.registry.key_path("sl-03").is_file()


async def test_a_device_retired_by_another_process_a_moment_before_is_refused_at_once(
        gateway_client: TestClient, fleet: Fleet) -> None:
    """L1: the verifier cached sl-03 as not retired; another process (the CLI) retired it; a frame arriving just
    after the removal's wait. Before, the mark changed nothing, the cache held for up to 1 s, and the frame was
    stored and acknowledged under an id the removal then deleted (200)."""
    fleet.ingest._verifier._device("sl-03")  # cached: not retired
    other = Registry(fleet.registry.path, create=False)
    other.retire("sl-03")
    other.close()
    admin = _admin(gateway_client)
    settled = fleet.ingest.settled

    async def settled_then_a_frame(device: str) -> None:
        await settled(device)
        fleet.feed("sl-03", WIN)

    admin._settled = settled_then_a_frame
    resp = await gateway_client.delete(PATH % "sl-03", headers=admin_headers())
    assert resp.status == 200, await resp.text()
    await asyncio.sleep(0.3)  # past the writer's batch wait: a frame accepted would be committed by now
    assert stored(fleet, "sl-03") == 0 and ("sl-03", 1) not in fleet.acks
    assert fleet.registry.lookup("sl-03") is None


async def test_the_loop_cancelling_the_wait_is_503_not_settled_and_the_device_is_put_back(
        gateway_client: TestClient, fleet: Fleet) -> None:
    """L8: the gateway's loop shutting down cancels the wait (as asyncio.run cancels every task). Before, the
    CancelledError came out of RegistryAdmin.remove as a 500."""
    before = fleet.registry.get("sl-03")
    admin = _admin(gateway_client)
    forever = asyncio.Event()

    async def settled(device: str) -> None:
        await forever.wait()

    admin._settled = settled
    removal = asyncio.ensure_future(gateway_client.delete(PATH % "sl-03", headers=admin_headers()))
    await until(lambda: retired(fleet, "sl-03"), "retired for its removal")
    await until(lambda: bool([t for t in asyncio.all_tasks() if "wait_for" in repr(t.get_coro())]), "waiting")
    waits = [t for t in asyncio.all_tasks() if "wait_for" in repr(t.get_coro())]
    for task in waits:
        task.cancel()
    resp = await removal
    error = (await resp.json())["error"]
    assert resp.status == 503 and error["code"] == "not_settled", error
    assert error["message"] == ("device sl-03 is not removed: the gateway's event loop stopped (it is shutting "
                                "down) while the removal waited for its commits; it is put back as it was: try "
                                "again later")
    assert fleet.registry.get("sl-03") == before


def test_a_closed_loop_is_503_not_settled_without_a_coroutine_left_unawaited(tmp_path: Path) -> None:
    """L8: the loop closed before the wait began. Before, run_coroutine_threadsafe's RuntimeError came out as a
    500 and the coroutine made for it was never awaited (a RuntimeWarning)."""
    reg = Registry(tmp_path / "registry")
    reg.add("sl-09", kind="streetlight", zone="north", lat="52.37", lon="4.89")
    store = tmp_path / "reports.sqlite"
    ReportStore(store, gateway_id="gw-test").close()

    async def settled(device: str) -> None:
        return None

    async def make() -> RegistryAdmin:
        return RegistryAdmin(registry=reg, policy=load_policy(), store_path=store, ingest_settled=settled)

    loop = asyncio.new_event_loop()
    admin = loop.run_until_complete(make())
    loop.close()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(Unavailable) as info:
                admin.remove("sl-09")
            assert info.value.code == "not_settled"
            assert "the gateway's event loop stopped before it could be waited for" in str(info.value)
            del info
            gc.collect()
        assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
        rec = reg.get("sl-09")
        assert not rec.retired and reg.key_path("sl-09").is_file()
    finally:
        reg.close()


async def test_close_waits_for_a_removal_in_its_wait_then_refuses_admin_writes(
        gateway_client: TestClient, fleet: Fleet) -> None:
    """L4 (the stop during the wait): the gateway's stop calls close() before it closes the registry; the removal
    finishes first. Before, RegistryAdmin had no close: the registry could be closed under the removal."""
    admin = _admin(gateway_client)
    go_on = asyncio.Event()

    async def settled(device: str) -> None:
        await go_on.wait()

    admin._settled = settled
    removal = asyncio.ensure_future(gateway_client.delete(PATH % "sl-03", headers=admin_headers()))
    await until(lambda: retired(fleet, "sl-03"), "retired for its removal")
    closing = asyncio.ensure_future(asyncio.to_thread(admin.close, 10.0))
    await asyncio.sleep(0.3)
    assert not closing.done()  # the removal is still waiting
    go_on.set()
    resp = await removal
    assert resp.status == 200, await resp.text()
    assert await closing is True
    assert fleet.registry.lookup("sl-03") is None
    resp = await gateway_client.post(PATH % "sl-02" + "/retire", headers=admin_headers())
    error = (await resp.json())["error"]
    assert resp.status == 503 and error["code"] == "registry", error
    assert not fleet.registry.get("sl-02").retired


async def test_reinstate_of_a_device_whose_key_file_is_gone_answers_a_warning(
        gateway_client: TestClient, fleet: Fleet) -> None:
    """L3: a removal cut off between deleting the key file and committing leaves the row retired without its key.
    Before, reinstate answered a plain 200: every frame of the device then failed as registry_unreadable."""
    resp = await gateway_client.post(PATH % "sl-03" + "/retire", headers=admin_headers())
    assert resp.status == 200, await resp.text()
    resp = await gateway_client.post(PATH % "sl-03" + "/reinstate", headers=admin_headers())
    assert resp.status == 200 and "warning" not in await resp.json()  # a usable key: no warning
    await gateway_client.post(PATH % "sl-03" + "/retire", headers=admin_headers())
    fleet.registry.key_path("sl-03").unlink()
    resp = await gateway_client.post(PATH % "sl-03" + "/reinstate", headers=admin_headers())
    body = await resp.json()
    assert resp.status == 200 and body["retired"] is False, body
    assert body["warning"].startswith("its key is not usable (no key file at ")
    assert "remove it again (civicedge gateway devices remove -- sl-03, or DELETE /api/admin/devices/sl-03)" in \
        body["warning"]
    assert "key" not in {k for k in body if k != "warning"}


def test_close_returns_false_at_its_bound(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry")
    admin = RegistryAdmin(registry=reg, policy=load_policy())
    try:
        with admin._writes:  # a write that does not end
            assert admin.close(0.05) is False
    finally:
        reg.close()
