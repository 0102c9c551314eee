"""A web read's statement is stopped past the read connections' statement limit (ReportQueries), so its
snapshot no longer holds the store's -wal: the API answers 503 ``store_timeout``, the worker is free for
the next read, a CSV export cut by it ends as a cut-off transfer, and the -wal can be checkpointed.

Real store and app (tests/web/conftest.py); the limit is made small and a deliberately endless recursive
query runs through the real read path (``ReportQueries._rows`` on a web worker thread).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.errors import StorageError
from gateway.resources import load_policy
from gateway.storage import ReportQueries
from gateway.web.app import create_app

from .support import ADMIN_TOKEN, NOW, Fleet

LIMIT_S = 1.0
# The app's clock: past the CSV's publication mark (hh:05) after the fixture's reports.
LATER = NOW + 2 * 3600
# Never ends by itself: only the statement limit (or close()) stops it. It reads the reports first, so it
# holds a snapshot of the store (a query of no table would hold none).
ENDLESS = ("WITH RECURSIVE c(x) AS (SELECT (SELECT count(*) FROM reports) UNION ALL SELECT x + 1 FROM c)"
           " SELECT count(*) FROM c")


def _db(fleet: Fleet) -> Path:
    return Path(fleet.queries.db_path)


@pytest.fixture
async def capped(fleet: Fleet) -> AsyncIterator[tuple[ReportQueries, TestClient]]:
    """The app over read connections whose statements may run LIMIT_S."""
    queries = ReportQueries(_db(fleet), statement_limit_s=LIMIT_S)
    app = create_app(store=queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN,
                     retention=fleet.retention, clock=lambda: float(LATER))
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
            yield queries, c
    finally:
        queries.close()


def _endless(queries: ReportQueries, **_: Any) -> list[Any]:
    return queries._rows(ENDLESS, ())


def _commit_meta(db: Path, value: str) -> None:
    """A commit of another connection (what the gateway's writer does between reads)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('readcap:test', ?)", (value,))
    finally:
        conn.close()


def _checkpoint(db: Path) -> tuple[int, int, int]:
    """A TRUNCATE checkpoint that does not wait for readers: busy (1) while any read still holds the log."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=0")
        busy, frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(busy), int(frames), int(done)
    finally:
        conn.close()


async def test_a_read_past_the_limit_answers_store_timeout_frees_its_worker_and_the_wal(
        capped: tuple[ReportQueries, TestClient], fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    queries, client = capped
    db = _db(fleet)
    url = f"/api/readings?from={NOW - 6 * 3600}&to={NOW}&field=mot"
    assert (await client.get(url)).status == 200
    monkeypatch.setattr(queries, "readings_page", lambda **kw: _endless(queries, **kw))
    started = time.monotonic()
    request = asyncio.ensure_future(client.get(url))
    await asyncio.sleep(LIMIT_S / 4)
    await asyncio.to_thread(_commit_meta, db, "during the read")  # frames the running read's snapshot predates
    held = await asyncio.to_thread(_checkpoint, db)
    assert not request.done()
    assert held[0] == 1, held  # the running read holds the log: it cannot be checkpointed whole
    resp = await request
    took = time.monotonic() - started
    body = await resp.json()
    assert resp.status == 503, body
    assert body["error"]["code"] == "store_timeout"
    assert "stopped" in body["error"]["message"]
    assert LIMIT_S <= took < 10, took  # the limit's doing, long before the 60 s store_timeout
    # No snapshot left: the log is checkpointed whole and started over, without waiting for anyone.
    busy, frames, done = await asyncio.to_thread(_checkpoint, db)
    assert busy == 0 and frames == done, (busy, frames, done)
    assert Path(str(db) + "-wal").stat().st_size == 0
    monkeypatch.undo()
    # The worker threads are free: the next reads run and answer (bulk and quick ones).
    again = await client.get(url)
    assert again.status == 200, await again.text()
    assert (await again.json())["count"] > 0
    health = await (await client.get("/healthz")).json()
    assert health["checks"]["devices"] > 0
    assert "store_not_answering" not in [p["code"] for p in health["problems"]]


async def test_a_csv_export_cut_by_the_limit_mid_stream_is_a_cut_off_transfer(
        capped: tuple[ReportQueries, TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    queries, client = capped
    url = f"/opendata/readings.csv?from={NOW - 3 * 86400}&to={NOW + 3600}"
    whole = await client.get(url)
    assert whole.status == 200
    full = await whole.text()
    assert len(full.splitlines()) > 2, full  # rows, not the header alone
    real = queries.device_hourly
    calls: list[int] = []

    def second_day_endless(**kw: Any) -> Any:  # each day is its own read, its own statements
        calls.append(1)
        return _endless(queries) if len(calls) == 2 else real(**kw)

    monkeypatch.setattr(queries, "device_hourly", second_day_endless)
    cut = await client.get(url)
    assert cut.status == 200  # the first day's text was sent before the second day was read
    with pytest.raises(aiohttp.ClientPayloadError):
        await cut.read()
    assert len(calls) == 2  # the export stopped at the stopped day
    # Stopped before anything was sent (the first day): the JSON error, not a CSV.
    calls.clear()
    calls.append(1)
    first = await client.get(url)
    assert first.status == 503
    assert (await first.json())["error"]["code"] == "store_timeout"
    monkeypatch.undo()
    again = await client.get(url)
    assert again.status == 200 and await again.text() == full


async def test_the_limit_counts_each_statement_not_the_connection_or_the_read(fleet: Fleet) -> None:
    queries = ReportQueries(_db(fleet), statement_limit_s=LIMIT_S)
    try:
        def reads() -> tuple[int, int]:
            first = queries.count_reports()
            time.sleep(LIMIT_S * 2)  # idle on the same connection longer than the limit
            with queries._reading() as conn:
                conn.execute("BEGIN")
                try:
                    for _ in range(3):  # statements of one read, together longer than the limit
                        conn.execute("SELECT count(*) FROM reports").fetchone()
                        time.sleep(LIMIT_S * 0.6)
                    n = int(conn.execute("SELECT count(*) FROM reports").fetchone()[0])
                finally:
                    conn.execute("COMMIT")
            return first, n

        first, n = await asyncio.to_thread(reads)
        assert first == n > 0
    finally:
        queries.close()


async def test_a_stopped_read_in_a_transaction_leaves_none_open(fleet: Fleet) -> None:
    queries = ReportQueries(_db(fleet), statement_limit_s=LIMIT_S)
    try:
        def stopped() -> tuple[str, bool, int]:
            try:
                with queries._reading() as conn:
                    conn.execute("BEGIN")
                    conn.execute("SELECT count(*) FROM reports").fetchone()  # the snapshot starts
                    conn.execute(ENDLESS).fetchone()
            except StorageError as exc:
                reason = exc.reason
            else:
                raise AssertionError("the endless statement ended")
            open_after = conn.in_transaction
            return reason, open_after, queries.count_reports()

        reason, open_after, count = await asyncio.to_thread(stopped)
        assert reason == "read_timeout"
        assert open_after is False
        assert count > 0  # the same connection reads on
    finally:
        queries.close()


async def test_the_writer_connection_is_not_limited(fleet: Fleet) -> None:
    """The limit is the read connections': the store's writer, on the same file, runs a statement longer
    than it to the end."""
    queries = ReportQueries(_db(fleet), statement_limit_s=0.05)
    try:
        assert await asyncio.to_thread(queries.count_reports) > 0
        writer = fleet.store._conn
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < 0.3:  # a statement of about 0.3 s or more (machine speed)
            n = n * 2 + 200_000
            got = writer.execute(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT count(*) FROM c",
                (n,)).fetchone()[0]
            assert got == n
        assert time.monotonic() - started >= 0.3
    finally:
        queries.close()
