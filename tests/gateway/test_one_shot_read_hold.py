"""A one-shot read (routes plan's ReportQueries(one_shot=True), export-log's one_shot_read) that reads the store
immutable keeps the store's <db>.lock shared for its whole life, so no gateway starts and checkpoints under it
(review M2), and it chooses immutable only when it got that hold (review L3). Since a gateway's live data directory
(lock file there, directory writable) is read plainly with no hold (tests/gateway/test_live_store_read_no_hold.py),
the hold is taken where the directory cannot be written (simulated: os.access denied for it)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.storage import ReportQueries, ReportRecord, ReportStore
from gateway.storage import sqlite_uri
from gateway.storage.provenance import one_shot_read
from helpers import store_dir_not_writable


def _records(device: str, first: int, count: int) -> list[ReportRecord]:
    now = int(time.time()) // 3600 * 3600
    return [ReportRecord(device=device, seq=s, kind="bin", zone="north", type="win", w=now - 900 * (100000 - s),
                         l=900, m={"fill": 50 + s % 40}, e={}, a=[], fw="1.0", received_at=float(now),
                         link="serial:x", digest="%064x" % (s * 7919 + len(device)))
            for s in range(first, first + count)]


def _stopped_store(tmp_path: Path, rows: int) -> Path:
    db = tmp_path / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    try:
        for first in range(1, rows + 1, 500):
            store.insert_batch(_records("bin-1", first, min(500, rows + 1 - first)))
    finally:
        store.close()
    assert (tmp_path / "reports.sqlite.lock").exists()  # a stopped gateway's lock file stays
    return db


def test_no_gateway_starts_under_routes_plans_immutable_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reviewer's repro: a gateway started, inserted and checkpointed under the immutable read, which then
    counted wrong rows and quick_check said 'invalid page number' (a false 'damaged store')."""
    db = _stopped_store(tmp_path, 2000)
    store_dir_not_writable(monkeypatch, tmp_path)
    queries = ReportQueries(db, one_shot=True)
    try:
        conn, _ = queries._open()
        cur = conn.execute("SELECT id FROM reports ORDER BY id")
        first = cur.fetchmany(10)
        with pytest.raises(StorageError) as err:
            ReportStore(db, gateway_id="gw-test")
        assert err.value.reason == "in_use"
        assert len(first) + len(cur.fetchall()) == 2000
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    finally:
        queries.close()
    # the hold ends with close(): the gateway starts
    ReportStore(db, gateway_id="gw-test").close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports.sqlite", "reports.sqlite.lock"]


def test_a_failed_one_shot_open_gives_the_hold_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store_dir_not_writable(monkeypatch, tmp_path)
    db = tmp_path / "reports.sqlite"
    db.write_bytes(b"not a database" * 100)
    (tmp_path / "reports.sqlite.lock").write_bytes(b"")
    with pytest.raises(StorageError):
        ReportQueries(db, one_shot=True)
    fd = os.open(tmp_path / "reports.sqlite.lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it any more
    finally:
        os.close(fd)


def test_immutable_only_when_the_hold_was_granted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """L3: a writer holding the lock when the read asks for it, then stopping before the open (the old code
    tested the lock again there), still gets the plain read: the decision is the hold's. (ReadHold(hold_live=True):
    the hold case in this writable directory; ReadHold(db) itself reads a live data directory plainly.)"""
    db = _stopped_store(tmp_path, 10)
    plain = db.resolve().as_uri() + "?mode=ro"
    store = ReportStore(db, gateway_id="gw-test")
    chosen: list[str] = []
    closed = False
    real_read_only_uri = sqlite_uri.read_only_uri

    def stop_then_uri(path: Path | str, *, one_shot: bool = False) -> str:
        nonlocal closed
        if not closed:
            store.close()  # the writer stops between the lock test and the choice of URI
            closed = True
        chosen.append(real_read_only_uri(path, one_shot=one_shot))
        return chosen[-1]

    monkeypatch.setattr(sqlite_uri, "read_only_uri", stop_then_uri)
    try:
        with sqlite_uri.ReadHold(db, hold_live=True) as hold:
            assert hold.granted is False and hold.uri == plain  # not immutable: this read holds no lock
        assert chosen == [plain]
    finally:
        if not closed:
            store.close()
    monkeypatch.undo()
    with sqlite_uri.ReadHold(db, hold_live=True) as hold:
        assert hold.granted is True and hold.uri == plain + "&immutable=1"
    with sqlite_uri.ReadHold(db) as hold:  # a live data directory: plain, no hold (intended since the MEDIUM fix)
        assert hold.live and hold.granted is False and hold.uri == plain
    store = ReportStore(db, gateway_id="gw-test")
    try:
        with sqlite_uri.ReadHold(db, hold_live=True) as hold:
            assert hold.granted is False and hold.uri == plain
    finally:
        store.close()


def test_without_a_lock_file_a_copy_is_read_immutable_and_nothing_is_created(tmp_path: Path) -> None:
    db = _stopped_store(tmp_path, 10)
    os.unlink(tmp_path / "reports.sqlite.lock")
    with sqlite_uri.ReadHold(db) as hold:
        assert hold.granted is None and hold.uri.endswith("?mode=ro&immutable=1")
    with one_shot_read(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM reports").fetchone() == (10,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports.sqlite"]
