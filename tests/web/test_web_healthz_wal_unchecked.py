"""``/healthz`` says ``store_wal_unchecked`` (warning) while reads ran without the over-limit -wal being
checkpointed (the WalGate's wait ran out), and stops saying it once the log is checkpointed again.

The real app over a real store (tests/web/conftest.py); the gate's limit and wait are made small, a reader
outside the app holds a snapshot so no checkpoint can copy the log, and another connection commits.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.resources import load_policy
from gateway.web import wal_gate
from gateway.web.app import create_app

from .support import ADMIN_TOKEN, NOW, Fleet

LIMIT = 64 * 1024
WAIT_S = 0.3
CODE = "store_wal_unchecked"


def _grow(db: Path, commits: int) -> None:
    """Commits of another connection, each a few pages (the gateway's writer does this between reads)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for i in range(commits):
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", ("walcap:%d" % i, "x" * 6000))
    finally:
        conn.close()


def _checkpoint(db: Path) -> tuple[int, ...]:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        return tuple(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
    finally:
        conn.close()


def _codes(health: dict[str, Any]) -> list[str]:
    return [p["code"] for p in health["problems"]]


async def test_healthz_says_when_reads_ran_with_the_wal_unchecked_and_stops_once_checkpointed(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(wal_gate, "WAL_LIMIT_BYTES", LIMIT)
    monkeypatch.setattr(wal_gate, "WAL_WAIT_S", WAIT_S)
    db = Path(fleet.queries.db_path)
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN,
                     retention=fleet.retention, clock=lambda: float(NOW))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        first = await (await client.get("/healthz")).json()
        assert CODE not in _codes(first), first
        # A reader holding a snapshot: no checkpoint can copy the frames committed after it.
        reader = sqlite3.connect("file:%s?mode=ro" % db, uri=True, isolation_level=None, check_same_thread=False)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM reports").fetchone()
            await asyncio.to_thread(_grow, db, 40)
            assert db.with_name(db.name + "-wal").stat().st_size > LIMIT
            await asyncio.sleep(wal_gate.WAL_LOOK_EVERY_S)  # the gate looks at the -wal's size at most every 1 s
            with caplog.at_level(logging.WARNING, logger="gateway.web.wal_gate"):
                resp = await client.get(f"/api/readings?from={NOW - 6 * 3600}&to={NOW}&field=mot")
            assert resp.status == 200  # the read waited WAIT_S, then ran anyway
            assert any("not checkpointed whole" in r.getMessage() for r in caplog.records)
            health = await (await client.get("/healthz")).json()
            problem = [p for p in health["problems"] if p["code"] == CODE]
            assert len(problem) == 1, health
            assert problem[0]["severity"] == "warning"
            assert health["severity"] == "warning" and health["status"] == "degraded"
            assert "write-ahead log" in problem[0]["message"] and "not checkpointed" in problem[0]["message"]
            # Still so while nothing changed: the problem is the log's state, not one request's.
            assert CODE in _codes(await (await client.get("/healthz")).json())
        finally:
            reader.execute("COMMIT")
            reader.close()
        busy = (await asyncio.to_thread(_checkpoint, db))[0]
        assert busy == 0
        after = await (await client.get("/healthz")).json()
        assert CODE not in _codes(after), after
