"""``DELETE /api/admin/devices/{id}`` inside the gateway waits for its ingest, not a timed settle (second review
H1, L1): a report of the device accepted before it was retired and committed however late is found by the second
check (409 heard_from, nothing removed); other admin writes go on meanwhile; a commit that does not come within
the bound puts the device back (503 not_settled)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiohttp.test_utils import TestClient

import gateway.web.source as source
from .removal_support import PATH, WIN, gateway_client, retired, stored, until  # noqa: F401 (a fixture)
from .support import Fleet, admin_headers
from gateway.registry.removal import SETTLE_MARGIN_S


async def test_a_report_committed_after_the_old_timed_settle_refuses_the_removal(
        gateway_client: TestClient, fleet: Fleet) -> None:
    """The store thread is held longer than batch_ms + the margin (a backlog, a slow fsync). Before, the removal
    answered 200 after that timed wait, then the report was committed and ACKed under a removed id."""
    before = fleet.registry.get("sl-03")
    key_bytes = fleet.registry.key_path("sl-03").read_bytes()
    release = threading.Event()
    held = asyncio.ensure_future(fleet.ingest.run_in_store(release.wait, 30))
    fleet.feed("sl-03", WIN)  # accepted while registered; its commit waits for the store thread
    removal = asyncio.ensure_future(gateway_client.delete(PATH % "sl-03", headers=admin_headers()))
    await until(lambda: retired(fleet, "sl-03"), "the device is retired for its removal")
    await asyncio.sleep(0.05 + SETTLE_MARGIN_S + 0.5)  # past the timed settle the removal used to take
    assert not removal.done()
    # Other admin writes are not held behind the waiting removal (second review L1).
    resp = await asyncio.wait_for(gateway_client.post(PATH % "sl-02" + "/retire", headers=admin_headers()), 5)
    assert resp.status == 200, await resp.text()
    release.set()
    await held
    resp = await removal
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "heard_from", error
    assert "while it was being removed (its registration is kept as it was)" in error["message"]
    assert fleet.registry.get("sl-03") == before
    assert fleet.registry.key_path("sl-03").read_bytes() == key_bytes
    assert stored(fleet, "sl-03") == 1


async def test_commits_that_do_not_come_within_the_bound_put_the_device_back(
        gateway_client: TestClient, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source, "REMOVAL_SETTLE_LIMIT_S", 0.3)
    before = fleet.registry.get("sl-03")
    release = threading.Event()
    held = asyncio.ensure_future(fleet.ingest.run_in_store(release.wait, 30))
    try:
        fleet.feed("sl-03", WIN)
        resp = await gateway_client.delete(PATH % "sl-03", headers=admin_headers())
        error = (await resp.json())["error"]
        assert resp.status == 503 and error["code"] == "not_settled", error
        assert error["message"] == ("device sl-03 is not removed: the reports of it the gateway accepted before it "
                                    "was retired for its removal were not all committed within 0.3 s (a long backlog "
                                    "or a slow store); it is put back as it was: try again later")
        assert fleet.registry.get("sl-03") == before and fleet.registry.key_path("sl-03").is_file()
    finally:
        release.set()
        await held


async def test_a_device_with_nothing_in_flight_is_removed_without_a_wait(
        gateway_client: TestClient, fleet: Fleet) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await gateway_client.delete(PATH % "sl-03", headers=admin_headers())
    assert resp.status == 200, await resp.text()
    assert loop.time() - started < SETTLE_MARGIN_S  # no timed settle
    assert fleet.registry.lookup("sl-03") is None and not fleet.registry.key_path("sl-03").exists()


async def test_settled_waits_for_a_late_seq_being_checked_against_the_store(fleet: Fleet) -> None:
    """A seq below the newest committed one (a frame a link kept back) is checked on the store thread by a handler
    task, which then queues it: settled waits for that handler too, not only for the reports queued already."""
    await fleet.report("sl-03", WIN)  # seq 1
    fleet.seqs["sl-03"] = 2
    await fleet.report("sl-03", WIN)  # seq 3: seq 2 is late
    release = threading.Event()
    held = asyncio.ensure_future(fleet.ingest.run_in_store(release.wait, 30))
    try:
        fleet.seqs["sl-03"] = 1
        fleet.feed("sl-03", WIN)  # seq 2: its handler waits for the store thread, then queues it
        settled = asyncio.ensure_future(fleet.ingest.settled("sl-03"))
        other = asyncio.ensure_future(fleet.ingest.settled("sl-02"))
        await asyncio.sleep(0.1)
        assert not settled.done() and other.done()
    finally:
        release.set()
        await held
    await asyncio.wait_for(settled, 5)
    assert stored(fleet, "sl-03") == 3  # settled once seq 2 was committed
