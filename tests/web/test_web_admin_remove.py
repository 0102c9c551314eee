"""Admin API ``DELETE /api/admin/devices/{id}``: the twin of ``civicedge gateway devices remove``. A device registered
by mistake and never heard from leaves the registry with its key file; one the store holds anything of, or a revoked
one, is refused and nothing changes, also when the gateway's writer commits a report of it during the removal."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from .removal_support import PATH, WIN, registered, retired, stored
from .support import ADMIN_TOKEN, Fleet, admin_headers, pty_gateway_config
from gateway.protocol.frame import FRAME_REPORT, build_frame
from gateway.registry import Registry
from gateway.registry.removal import SETTLE_MARGIN_S
from gateway.resources import load_policy
from gateway.service import Gateway
from gateway.storage import ReportStore
from gateway.storage.device_traces import device_traces
from gateway.web.errors import Unavailable
from gateway.web.source import RegistryAdmin

async def _listed(client: TestClient) -> set[str]:
    resp = await client.get("/api/admin/devices", headers=admin_headers())
    assert resp.status == 200
    return {d["id"] for d in (await resp.json())["devices"]}


async def test_a_device_never_heard_from_is_removed_with_its_key_file_and_can_be_enrolled_again(
        client: TestClient, fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key_file = fleet.registry.key_path("sl-03")
    old_key = fleet.registry.key("sl-03")
    assert key_file.is_file() and device_traces(fleet.queries.db_path, "sl-03") == []
    assert "sl-03" in await _listed(client)
    resp = await client.delete(PATH % "sl-03", headers=admin_headers())
    text = await resp.text()
    assert resp.status == 200, text
    assert await resp.json() == {"device": "sl-03", "removed": True, "kind": "streetlight", "zone": "north"}
    assert fleet.registry.lookup("sl-03") is None and not key_file.exists()
    assert not registered(fleet, "sl-03")  # committed, seen by any process
    assert "sl-03" not in await _listed(client) and "sl-01" in await _listed(client)
    audit = [r for r in caplog.records if r.getMessage().startswith("admin API: removed device sl-03")]
    assert len(audit) == 1 and audit[0].levelno == logging.WARNING
    assert "(streetlight, zone north; never heard from" in audit[0].getMessage()
    assert audit[0].getMessage().endswith("[from 127.0.0.1]")
    # The key is never in an answer nor a log line.
    assert old_key.hex() not in text and old_key.hex() not in caplog.text and ADMIN_TOKEN not in caplog.text

    # Its frames are refused as from an unknown device (the verifier's cache follows the registry at once).
    before, rejected = fleet.metrics.value("civicedge_rejections_total", {"reason": "unknown_device"}), fleet.rejected()
    fleet.ingest.feed(build_frame(FRAME_REPORT, "sl-03", 1, WIN, old_key), fleet.link("serial:/dev/pts/9"))
    await fleet.settle(stored=fleet.queries.count_reports(), rejected=rejected + 1)
    assert fleet.metrics.value("civicedge_rejections_total", {"reason": "unknown_device"}) == before + 1
    assert device_traces(fleet.queries.db_path, "sl-03") == []

    # Never heard from: the id is enrolled again (another board, a new key) and its reports are accepted.
    new_key = bytes(range(40, 72))
    resp = await client.put(PATH % "sl-03", headers=admin_headers(), json={
        "kind": "streetlight", "zone": "south", "lat": "52.1", "lon": "4.2", "key": new_key.hex()})
    assert resp.status == 201 and (await resp.json())["result"] == "added"
    assert fleet.registry.key("sl-03") == new_key
    fleet.seqs.pop("sl-03", None)
    await fleet.report("sl-03", WIN)
    assert device_traces(fleet.queries.db_path, "sl-03") != []


async def test_a_device_with_stored_reports_is_refused_and_nothing_changes(
        client: TestClient, fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.web")
    before = fleet.registry.get("sl-01")
    key_bytes = fleet.registry.key_path("sl-01").read_bytes()
    count = stored(fleet, "sl-01")
    assert count > 0
    resp = await client.delete(PATH % "sl-01", headers=admin_headers())
    assert resp.status == 409
    error = (await resp.json())["error"]
    assert error["code"] == "heard_from" and error["param"] == "device_id"
    assert error["message"].startswith("device sl-01 was heard from: the report store holds rows of it (")
    # The API's own endpoints, not the command line's (review note).
    assert error["message"].endswith("If its board left this gateway, retire it (POST /api/admin/devices/sl-01/"
                                     "retire); if its key is compromised, revoke it (POST /api/admin/devices/sl-01/"
                                     "revoke)"), error["message"]
    assert fleet.registry.get("sl-01") == before
    assert fleet.registry.key_path("sl-01").read_bytes() == key_bytes
    assert stored(fleet, "sl-01") == count
    assert "sl-01" in await _listed(client)
    assert any(r.getMessage().startswith("admin API: refused DELETE /api/admin/devices/{device_id} (device sl-01): "
                                         "409 heard_from, param device_id") for r in caplog.records), caplog.text


async def test_a_revoked_device_is_not_removed(client: TestClient, fleet: Fleet) -> None:
    before = fleet.registry.get("bin-03")
    assert before.revoked
    resp = await client.delete(PATH % "bin-03", headers=admin_headers())
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "revoked"
    assert fleet.registry.get("bin-03") == before and fleet.registry.key_path("bin-03").is_file()


async def test_an_unknown_or_malformed_id_is_refused(client: TestClient, fleet: Fleet) -> None:
    resp = await client.delete(PATH % "ghost", headers=admin_headers())
    assert resp.status == 404 and await resp.json() == {"error": {
        "code": "unknown_device", "message": "no device 'ghost'", "param": "device_id"}}
    resp = await client.delete(PATH % "bad%20id!", headers=admin_headers())
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "device_id"


@pytest.mark.parametrize(("headers", "code"), [
    ({}, "missing_token"), ({"Authorization": "Bearer wrong-token-wrong-token-0000"}, "wrong_token")])
async def test_without_the_right_token_nothing_is_removed(client: TestClient, fleet: Fleet, headers: dict[str, str],
                                                          code: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    resp = await client.delete(PATH % "sl-03", headers=headers)
    assert resp.status == 401 and (await resp.json())["error"]["code"] == code
    assert fleet.registry.lookup("sl-03") is not None and fleet.registry.key_path("sl-03").is_file()
    assert "removed device" not in caplog.text and "wrong-token" not in caplog.text


async def test_a_body_is_refused_before_anything_is_removed(client: TestClient, fleet: Fleet) -> None:
    resp = await client.delete(PATH % "sl-03", headers=admin_headers(), json={"force": True})
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "body"
    assert fleet.registry.lookup("sl-03") is not None and fleet.registry.key_path("sl-03").is_file()


async def test_a_report_committed_during_the_removal_puts_the_registration_back_without_blocking_the_loop(
        client: TestClient, fleet: Fleet) -> None:
    """The real race: the gateway verified a frame of the device while it was registered, and its writer commits it
    only after the row is gone (the store thread is held here until then). The check after the writer's batch wait
    finds it: 409 heard_from, the registration back as it was, the report stored; meanwhile the loop serves. The row is
    never gone meanwhile: the device is retired during the wait (a process killed then leaves it so)."""
    before = fleet.registry.get("sl-03")
    key_bytes = fleet.registry.key_path("sl-03").read_bytes()
    release = threading.Event()
    held = asyncio.ensure_future(fleet.ingest.run_in_store(release.wait, 30))  # the store thread, busy
    fleet.feed("sl-03", WIN)  # verified now, while sl-03 is registered; its commit waits for the store thread
    removal = asyncio.ensure_future(client.delete(PATH % "sl-03", headers=admin_headers()))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not retired(fleet, "sl-03"):  # the device is retired (its frames refused from now on)...
        assert loop.time() < deadline and not removal.done()
        await asyncio.sleep(0.005)
    assert registered(fleet, "sl-03")  # its row stays
    release.set()  # ... then the writer commits the report it accepted before
    await held
    while stored(fleet, "sl-03") == 0:  # committed by the writer, under the id being removed
        assert loop.time() < deadline and not removal.done()
        await asyncio.sleep(0.005)
    # The removal waits on a worker thread: the event loop answers meanwhile.
    assert (await client.get("/api/devices")).status == 200
    assert not removal.done()
    resp = await removal
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "heard_from", error
    assert "was heard from while it was being removed (its registration is kept as it was)" in error["message"]
    assert fleet.registry.get("sl-03") == before
    assert fleet.registry.key_path("sl-03").read_bytes() == key_bytes
    assert stored(fleet, "sl-03") == 1
    assert "sl-03" in await _listed(client)


def test_the_wait_is_the_writers_batch_and_the_margin_and_none_without_a_writer(fleet: Fleet, tmp_path: Path) -> None:
    """No registry cache wait in the gateway's process (its verifier reads this registry instance); no wait at all
    when no gateway writes the store (nothing can be committed meanwhile)."""
    admin = RegistryAdmin(registry=fleet.registry, policy=load_policy(), store_batch_ms=400)
    assert admin.removal_settle_s() == pytest.approx(0.4 + SETTLE_MARGIN_S)
    assert RegistryAdmin(registry=fleet.registry, policy=load_policy(), store_batch_ms=1).removal_settle_s() \
        == pytest.approx(0.05 + SETTLE_MARGIN_S)
    idle = tmp_path / "idle.sqlite"
    ReportStore(idle, gateway_id="gw-test").close()  # a store no gateway writes
    admin = RegistryAdmin(registry=fleet.registry, policy=load_policy(), store_path=idle, store_batch_ms=10_000)
    started = time.monotonic()
    assert admin.remove("sl-02") == {"kind": "streetlight", "zone": "centre"}
    assert time.monotonic() - started < SETTLE_MARGIN_S  # the 12 s wait of a writer with batch_ms 10000 not taken
    assert fleet.registry.lookup("sl-02") is None


def test_without_a_store_or_with_an_unreadable_one_nothing_is_removed(fleet: Fleet, tmp_path: Path) -> None:
    with pytest.raises(Unavailable) as info:
        RegistryAdmin(registry=fleet.registry, policy=load_policy()).remove("sl-03")
    assert info.value.code == "no_store" and info.value.status == 503
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(Unavailable) as info:
        RegistryAdmin(registry=fleet.registry, policy=load_policy(), store_path=junk).remove("sl-03")
    assert info.value.code == "backend_unavailable" and "(open_failed)" in info.value.message
    # A file that is no report store (the registry's own database, an empty file) or none at all holds no row of
    # any device: it must not pass for a store without the device (review H1, L1).
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    for wrong in (fleet.registry.path / "devices.sqlite", empty, tmp_path / "missing.sqlite"):
        with pytest.raises(Unavailable) as info:
            RegistryAdmin(registry=fleet.registry, policy=load_policy(), store_path=wrong).remove("sl-03")
        assert info.value.code == "no_store" and info.value.message.startswith(
            "device 'sl-03' is not removed: "), info.value.message
    assert fleet.registry.get("sl-03").retired is False and fleet.registry.key_path("sl-03").is_file()


async def test_a_running_gateway_waits_for_its_ingest_not_a_timed_settle(tmp_path: Path) -> None:
    """The gateway's own wiring (gateway.service): the app checks the gateway's store, which its writer holds, and
    waits for the ingest to commit what it accepted of the device (nothing here: at once), not batch_ms and the
    margin (test_web_admin_remove_settled.py holds a report back)."""
    data = tmp_path / "data"
    registry = Registry(data / "registry")
    registry.add("sl-77", kind="streetlight", zone="north", lat="52.38", lon="4.9")
    registry.close()
    master, slave = os.openpty()
    gw = Gateway(pty_gateway_config(tmp_path, "gw-rm", slave, admin=True, storage={"batch_ms": 700}))
    await gw.start()
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{gw.http_port}") as http:
            started = time.monotonic()
            async with http.delete(PATH % "sl-77", headers=admin_headers()) as resp:
                assert resp.status == 200, await resp.text()
            assert time.monotonic() - started < 0.7 + SETTLE_MARGIN_S
            assert gw.registry.lookup("sl-77") is None and not gw.registry.key_path("sl-77").exists()
            async with http.delete(PATH % "sl-77", headers=admin_headers()) as resp:
                assert resp.status == 404
    finally:
        await gw.stop()
        os.close(master)
        os.close(slave)


async def test_a_key_file_that_cannot_be_deleted_is_503_naming_it_and_nothing_is_removed(
        client: TestClient, fleet: Fleet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.web")
    key_file = fleet.registry.key_path("sl-03")
    before = fleet.registry.get("sl-03")
    real_unlink = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if self == key_file:
            raise PermissionError(13, "Permission denied", str(self))
        real_unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    resp = await client.delete(PATH % "sl-03", headers=admin_headers())
    error = (await resp.json())["error"]
    assert resp.status == 503 and error["code"] == "registry", error
    assert error["message"] == "device sl-03 is not removed: its key file %s could not be deleted: Permission " \
        "denied" % key_file
    assert fleet.registry.get("sl-03") == before and key_file.is_file()  # the row and its key file go together
    assert any("refused DELETE /api/admin/devices/{device_id} (device sl-03): 503 registry" in r.getMessage()
               for r in caplog.records), caplog.text
