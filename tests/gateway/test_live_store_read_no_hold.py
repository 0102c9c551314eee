"""A one-shot read of a gateway's live data directory (its lock file there, the directory writable) takes no hold on
<db>.lock: a plain read in one snapshot, so a slow `export-log | less` keeps no gateway from starting (review MEDIUM),
and the export is still one consistent chain; export-log spools before writing to a pipe."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.storage import ReportQueries, ReportRecord, ReportStore
from gateway.storage import sqlite_uri
from gateway.storage.provenance import export_chain_summary, one_shot_read, verify_export_summary
from hil.cli.main import main
from helpers import store_dir_not_writable


def _records(first: int, count: int, device: str = "bin-1") -> list[ReportRecord]:
    now = int(time.time()) // 3600 * 3600
    return [ReportRecord(device=device, seq=s, kind="bin", zone="north", type="win", w=now - 900 * (100000 - s),
                         l=900, m={"fill": 50 + s % 40}, e={}, a=[], fw="1.0", received_at=float(now),
                         link="serial:x", digest="%064x" % (s * 7919 + len(device)))
            for s in range(first, first + count)]


def _insert(store: ReportStore, first: int, count: int, device: str = "bin-1") -> None:
    for start in range(first, first + count, 500):
        store.insert_batch(_records(start, min(500, first + count - start), device))


def _stopped_store(tmp_path: Path, rows: int) -> Path:
    db = tmp_path / "data" / "reports.sqlite"
    db.parent.mkdir()
    store = ReportStore(db, gateway_id="gw-test")
    try:
        _insert(store, 1, rows)
    finally:
        store.close()
    assert (db.parent / "reports.sqlite.lock").exists()
    return db


def test_a_gateway_starts_ingests_and_checkpoints_under_an_export_of_its_data_directory(tmp_path: Path) -> None:
    """The export's snapshot stays whole while a gateway starts, commits past a checkpoint's worth of frames
    (its PASSIVE checkpoints) and stops (TRUNCATE, busy: only a warning); the chain exported is the one
    before the gateway started, and verifies."""
    db = _stopped_store(tmp_path, 1500)
    with sqlite_uri.ReadHold(db) as hold:
        assert hold.live and hold.granted is False and hold.uri == db.resolve().as_uri() + "?mode=ro"

    started: list[int] = []

    class Slow(io.StringIO):
        def write(self, text: str) -> int:
            if not started:  # the export has begun (the first entry read): a gateway starts and works
                store = ReportStore(db, gateway_id="gw-test")  # not refused in_use
                try:
                    _insert(store, 1, 1500, device="bin-2")  # > CHECKPOINT_FRAMES frames: PASSIVE checkpoints
                    started.append(1)
                finally:
                    store.close()  # its TRUNCATE checkpoint meets the reader: busy, logged, nothing breaks
            return super().write(text)

    out = Slow()
    summary = export_chain_summary(db, out)
    assert started and summary.count == 1500
    assert verify_export_summary(out.getvalue().splitlines(keepends=True)).head == summary.head
    # the next read sees the gateway's commits (the latest), and the store is sound
    whole = io.StringIO()
    assert export_chain_summary(db, whole).count == 3000
    assert verify_export_summary(whole.getvalue().splitlines(keepends=True)).count == 3000
    with one_shot_read(db) as conn:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    ReportStore(db, gateway_id="gw-test").close()  # and it opens again


def test_routes_plans_read_of_a_data_directory_lets_a_gateway_start(tmp_path: Path) -> None:
    db = _stopped_store(tmp_path, 1000)
    queries = ReportQueries(db, one_shot=True)
    try:
        conn, _ = queries._open()
        cur = conn.execute("SELECT id FROM reports ORDER BY id")
        first = cur.fetchmany(10)
        store = ReportStore(db, gateway_id="gw-test")
        try:
            _insert(store, 1, 1200, device="bin-2")
        finally:
            store.close()
        assert len(first) + len(cur.fetchall()) == 1000  # one statement: one snapshot
        assert conn.execute("SELECT COUNT(*) FROM reports").fetchone() == (2200,)  # the latest commits
    finally:
        queries.close()


def test_export_log_into_a_blocked_pipe_lets_a_gateway_start_and_ingest(tmp_path: Path) -> None:
    """The reviewer's repro through the CLI: `export-log | less` with the pipe full. The export is spooled, so its
    store read is over; a gateway starts and ingests meanwhile; the export, drained later, verifies as the chain
    it read."""
    db = _stopped_store(tmp_path, 3000)  # ~1 MB of JSON Lines: more than a pipe holds
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli.main", "gateway", "export-log", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=repo)
    try:
        deadline = time.monotonic() + 60
        while not (db.parent / "reports.sqlite-shm").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the export has opened the store
        time.sleep(1.0)
        assert proc.poll() is None  # blocked on the full pipe
        store = ReportStore(db, gateway_id="gw-test")  # not refused in_use
        try:
            _insert(store, 1, 600, device="bin-2")
        finally:
            store.close()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    summary = verify_export_summary(out.decode("utf-8").splitlines(keepends=True))
    assert summary.count in (3000, 3600)  # the snapshot it read: before or after the gateway's commits, whole
    assert b"exported %d entries, head %s" % (summary.count, summary.head.encode()) in err


def test_a_spool_that_cannot_be_made_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    db = _stopped_store(tmp_path, 5)

    def full(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("gateway.cli.log_cmd.tempfile.TemporaryFile", full)
    assert main(["gateway", "export-log", "--db", str(db)]) == 1
    err = capsys.readouterr()
    assert err.out == ""
    assert "error (write_failed): cannot make a temporary file for the export" in err.err


def test_a_directory_not_writable_keeps_the_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store whose directory this user cannot write is read immutable under the shared hold: no gateway starts
    under that read (it would change the main file under it)."""
    from gateway.errors import StorageError

    db = _stopped_store(tmp_path, 10)
    store_dir_not_writable(monkeypatch, db.parent)
    with one_shot_read(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM reports").fetchone() == (10,)
        with pytest.raises(StorageError) as err:
            ReportStore(db, gateway_id="gw-test")
        assert err.value.reason == "in_use"
    monkeypatch.undo()
    ReportStore(db, gateway_id="gw-test").close()
