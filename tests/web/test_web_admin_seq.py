"""``GET /api/admin/devices/{id}/seq``: the highest report seq stored under a registered id, what a board
taking the id over must count above (``civicedge provision --gateway``). Over the real registry and store,
fed through the gateway's ingest service."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from gateway.resources import load_policy
from gateway.storage import ReportQueries
from gateway.web.app import create_app

from .support import ADMIN_TOKEN, NOW, Fleet, admin_headers
from .test_web_event_loop import DELAY_S, loop_ticks_during

SIX_HOURS = 6 * 3600


async def _seq(client: TestClient, device: str, **kwargs: object) -> tuple[int, dict[str, object]]:
    resp = await client.get(f"/api/admin/devices/{device}/seq", **kwargs)  # type: ignore[arg-type]
    return resp.status, await resp.json()


async def test_needs_the_admin_token(client: TestClient) -> None:
    for headers, code in (({}, "missing_token"), (admin_headers("wrong-token-wrong-token-0000"), "wrong_token")):
        status, body = await _seq(client, "sl-01", headers=headers)
        assert (status, body["error"]["code"]) == (401, code), body  # type: ignore[index]
    # Checked before the id: an unknown id says nothing to a caller without the token.
    status, body = await _seq(client, "sl-99", headers={})
    assert status == 401, body


async def test_unknown_and_malformed_ids(client: TestClient) -> None:
    status, body = await _seq(client, "sl-99", headers=admin_headers())
    assert status == 404 and body["error"] == {  # the usual error body, as move/revoke/rotate-key
        "code": "unknown_device", "message": "no device 'sl-99'", "param": "device_id"}, body
    status, body = await _seq(client, "sl%2001", headers=admin_headers())
    assert status == 400 and body["error"]["param"] == "device_id", body  # type: ignore[index]
    resp = await client.get("/api/admin/devices/sl-01/seq?device=sl-02", headers=admin_headers())
    assert resp.status == 400


async def test_the_highest_seq_counts_stored_reports_window_duplicates_and_retired_seqs(
        client: TestClient, fleet: Fleet) -> None:
    stored = fleet.queries.reports(device="sl-01")
    assert stored and fleet.seqs["sl-01"] == max(r.seq for r in stored)
    status, body = await _seq(client, "sl-01", headers=admin_headers())
    assert (status, body) == (200, {"device": "sl-01", "highest_seq": fleet.seqs["sl-01"]})
    # Registered, never reported (sl-03), and revoked (bin-03): 0, still an answer.
    for device in ("sl-03", "bin-03"):
        status, body = await _seq(client, device, headers=admin_headers())
        assert (status, body) == (200, {"device": device, "highest_seq": 0}), body

    # sl-01 releases the morning's PIR passes again, under a new seq (its clock was set back): a window
    # duplicate, acknowledged and kept in window_duplicates, with no report row.
    count = fleet.queries.count_reports()
    seq = fleet.feed("sl-01", {"t": "win", "k": "streetlight", "w": NOW - SIX_HOURS, "l": SIX_HOURS,
                               "m": {"mot": 5}, "e": {"mot": 500}})
    deadline = time.monotonic() + 10
    while ("sl-01", seq) not in fleet.acks:
        assert time.monotonic() < deadline, "the window duplicate was not acknowledged"
        await asyncio.sleep(0.01)
    assert fleet.queries.count_reports() == count
    assert max(r.seq for r in fleet.queries.reports(device="sl-01")) == seq - 1
    status, body = await _seq(client, "sl-01", headers=admin_headers())
    assert (status, body["highest_seq"]) == (200, seq), body

    # Report retention removed sl-02's rows up to seq 500 (it keeps only the highest removed seq).
    conn = sqlite3.connect(fleet.store.path)
    try:
        conn.execute("INSERT INTO retired_seqs (device, seq) VALUES ('sl-02', 500)")
        conn.commit()
    finally:
        conn.close()
    status, body = await _seq(client, "sl-02", headers=admin_headers())
    assert (status, body["highest_seq"]) == (200, 500), body


async def test_without_a_registry_it_is_503(fleet: Fleet) -> None:
    app = create_app(store=fleet.queries, registry=None, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        status, body = await _seq(client, "sl-01", headers=admin_headers())
    assert (status, body["error"]["code"]) == (503, "no_registry"), body  # type: ignore[index]


class _SlowSeq(ReportQueries):
    """The fleet's store, with ``highest_seq`` blocking its thread ``DELAY_S`` (a slow store); ``threads``:
    the threads it ran on."""

    threads: set[int] = set()

    def highest_seq(self, device: str) -> int:
        self.threads = self.threads | {threading.get_ident()}
        time.sleep(DELAY_S)
        return super().highest_seq(device)


async def test_a_slow_store_does_not_block_the_event_loop(fleet: Fleet) -> None:
    store = _SlowSeq(Path(fleet.store.path))
    app = create_app(store=store, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            (status, body), ticks, longest = await loop_ticks_during(_seq(client, "sl-02", headers=admin_headers()))
        assert (status, body["highest_seq"]) == (200, fleet.seqs["sl-02"]), body
        # The read blocked its thread DELAY_S, not the loop's; the loop ran all along (exact, not a bound on
        # the loop's longest wait, which a loaded machine can exceed with the read off the loop).
        assert store.threads and threading.get_ident() not in store.threads, store.threads
        assert ticks >= 10, (ticks, longest)
    finally:
        store.close()
