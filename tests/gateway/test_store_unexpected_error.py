"""A bug in the store code (an exception that is not a StorageError) must not stop ingest.

Before: the exception left insert_batch's transaction open (every later BEGIN failed) and ended the
ingest writer task silently, so the gateway kept reading frames and stored none until a restart.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path
from typing import Callable

import pytest
from conftest import KEYS, make_env
from helpers import report_frame
from procs import PtyDevice

from gateway.config import load_config
from gateway.service import Gateway
from gateway.storage import ReportRecord, ReportStore
from gateway.storage.store import BatchResult

T0 = 1_795_377_600


async def _wait(predicate: Callable[[], bool], what: str, dev: PtyDevice, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, what
        await asyncio.to_thread(dev.pump, 0.05)


def test_an_unexpected_error_inside_the_batch_rolls_back_its_transaction(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "reports.sqlite", gateway_id="gw")
    try:
        bad = ReportRecord("bin-1", 1, "bin", "north", "win", T0, 900, {"fill": object()},  # type: ignore[dict-item]
                           {}, [], "1.0", T0 + 5.0, "serial:/dev/x", "%064x" % 1)
        with pytest.raises(TypeError):
            store.insert_batch([bad], {"bin-1": 1})
        good = bad._replace(m={"fill": 40})
        result = store.insert_batch([good], {"bin-1": 1})   # was: cannot start a transaction within a transaction
        assert result.inserted == [("bin-1", 1)]
        assert store.ack_floors() == {"bin-1": 1}
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / "reports.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0] == 1
    conn.close()


@pytest.mark.timeout(60)
async def test_the_ingest_writer_outlives_an_unexpected_store_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    dev = PtyDevice(KEYS)
    gw = Gateway(load_config(make_env(tmp_path, serial=(dev.path,))))
    await gw.start()
    try:
        await _wait(lambda: gw.metrics.value("civicedge_link_state", {"link": "serial:%s" % dev.path}) == 1,
                    "link", dev)
        real = gw.store.insert_batch
        calls = {"n": 0}

        def insert(records: list[ReportRecord], floors: dict[str, int] | None = None) -> BatchResult:
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyError("a bug")
            return real(records, floors)

        monkeypatch.setattr(gw.store, "insert_batch", insert)
        dev.send([report_frame("bin-1", 1, KEYS["bin-1"])])
        await _wait(lambda: gw.metrics.value("civicedge_store_commit_failures_total") == 1, "failure counted", dev)
        assert dev.acks.get("bin-1", 0) == 0          # not stored: not acknowledged, the device keeps it
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert any("unexpected error" in r.getMessage() and r.exc_info for r in errors), errors  # with traceback
        # the device re-sends: stored and acknowledged by the same writer
        dev.send([report_frame("bin-1", 1, KEYS["bin-1"]), report_frame("bin-1", 2, KEYS["bin-1"])])
        await _wait(lambda: dev.acks.get("bin-1", 0) >= 2, "no ACK after the error: %r" % dev.acks, dev)
        assert gw.metrics.value("civicedge_reports_stored_total") == 2
        assert "report store commits succeed again, after 1 failed commit(s)" in caplog.text
    finally:
        await gw.stop()


class _RollbackFails:
    """The store's connection, whose ROLLBACK fails as on a disk that stopped answering (an I/O error
    cannot be produced on this machine's disk at will); everything else is the real connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "ROLLBACK":
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def test_a_failing_rollback_does_not_hide_the_error_being_handled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    store = ReportStore(tmp_path / "reports.sqlite", gateway_id="gw")
    real = store._conn
    try:
        monkeypatch.setattr(store, "_conn", _RollbackFails(real))
        bad = ReportRecord("bin-1", 1, "bin", "north", "win", T0, 900, {"fill": object()},  # type: ignore[dict-item]
                           {}, [], "1.0", T0 + 5.0, "serial:/dev/x", "%064x" % 1)
        with pytest.raises(TypeError):               # the error being handled, not the rollback's OperationalError
            store.insert_batch([bad], {})
        assert "rolling back after storing 1 reports failed as well: disk I/O error" in caplog.text
    finally:
        monkeypatch.setattr(store, "_conn", real)
        if real.in_transaction:
            real.execute("ROLLBACK")
        store.close()


@pytest.mark.timeout(60)
async def test_the_ingest_writer_outlives_an_unexpected_error_after_the_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Stored, then the writer's handling of the commit failed where it hands out the ACKs (a bug outside the
    per-ACK guard, test_ingest_ack_inline has one inside it): the writer goes on, the batch is settled once,
    and the device's re-send is answered as a duplicate."""
    caplog.set_level(logging.INFO)
    dev = PtyDevice(KEYS)
    gw = Gateway(load_config(make_env(tmp_path, serial=(dev.path,))))
    await gw.start()
    try:
        await _wait(lambda: gw.metrics.value("civicedge_link_state", {"link": "serial:%s" % dev.path}) == 1,
                    "link", dev)
        ingest = gw.ingest
        assert ingest is not None
        real_ack_now = ingest._ack_now  # a serial link's ACKs are sent inline after the commit
        broken = {"left": 1}

        def ack_now(verified, link):  # type: ignore[no-untyped-def]
            if broken["left"]:
                broken["left"] -= 1
                raise RuntimeError("a bug")
            real_ack_now(verified, link)

        monkeypatch.setattr(ingest, "_ack_now", ack_now)
        dev.send([report_frame("bin-1", 1, KEYS["bin-1"])])
        await _wait(lambda: gw.metrics.value("civicedge_reports_stored_total") == 1, "stored", dev)
        await _wait(lambda: any("handling a commit of 1 report(s) failed" in r.getMessage() and r.exc_info
                                for r in caplog.records), "traceback logged", dev)
        assert dev.acks.get("bin-1", 0) == 0 and ingest.backlog == 0   # settled once, not acknowledged
        dev.send([report_frame("bin-1", 1, KEYS["bin-1"]), report_frame("bin-1", 2, KEYS["bin-1"])])
        await _wait(lambda: dev.acks.get("bin-1", 0) >= 2, "no ACK after the error: %r" % dev.acks, dev)
        assert gw.metrics.value("civicedge_reports_stored_total") == 2 and ingest.backlog == 0
    finally:
        await gw.stop()
