"""Another program checkpointing the running store through SQLite (review E, M1).

An operator's ``sqlite3 reports.sqlite "PRAGMA wal_checkpoint"`` (say, before a cp of the file) writes the main
file through SQLite's locks without committing: ``data_version`` does not move, the file's stamp does. It was
reported as "overwritten in place", the store stopped storing, and its stop set the -wal aside. The -shm's
``nBackfill`` (or a log started over) tells it apart from a cp: a WARNING, and the store goes on. Real store,
real SQLite in another process.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.storage import ReportStore
from gateway.storage.store_files import FileIdentity, MainStamp, overwritten

from test_store_overwrite_races import cp, integrity, rec, seqs, side, snapshot

pytestmark = pytest.mark.timeout(120)
HARMLESS = "another program checkpointed the store"


def external(db: Path, sql: str) -> list[tuple[int, ...]]:
    """``sql`` run by a sqlite3 connection of another process on the running store."""
    code = "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute(sys.argv[2]).fetchall()); c.close()"
    done = subprocess.run([sys.executable, "-c", code, str(db), sql], capture_output=True, text=True, timeout=60,
                          check=True)
    return eval(done.stdout)  # noqa: S307 - our own child's repr of a list of int tuples


def open_store(tmp_path: Path, n: int) -> tuple[Path, ReportStore]:
    db = tmp_path / "data" / "reports.sqlite"
    db.parent.mkdir(exist_ok=True)
    store = ReportStore(db, gateway_id="gw-test")
    for seq in range(1, n + 1):
        store.insert_batch([rec(seq)])
    return db, store


@pytest.mark.parametrize("mode", ["", "(PASSIVE)", "(FULL)", "(RESTART)"])
def test_another_programs_checkpoint_is_harmless(tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str) -> None:
    """Fails before: store_gone 'overwritten in place', every write refused, the -wal set aside at the stop."""
    db, store = open_store(tmp_path, 200)
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.storage.store"):
            busy, frames, moved = external(db, "PRAGMA wal_checkpoint%s" % mode)[0]
            assert busy == 0 and moved == frames > 0  # it wrote the main file
            assert store.check_file() is None
            for seq in range(201, 1400):  # past CHECKPOINT_FRAMES: the store's own checkpoints go on
                store.insert_batch([rec(seq)])
            external(db, "PRAGMA wal_checkpoint%s" % mode)  # again, in a later log
            store.insert_batch([rec(1400)])
            assert store.check_file() is None and not store.file_gone
        assert caplog.text.count(HARMLESS) == 2 and "overwritten in place" not in caplog.text
    finally:
        store.close()
    assert not side(db, "-wal.overwritten").exists() and not side(db, "-wal").exists()
    assert integrity(db) == "ok" and seqs(db) == (1400, 1400)


def test_a_checkpoint_a_reader_cuts_short_is_harmless(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A partial checkpoint (a reader's snapshot holds the rest of the log): the file is part-written, its
    size as before or up to the database's; the -wal keeps the rest and the stop checkpoints it all."""
    db, store = open_store(tmp_path, 100)
    reader = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM reports").fetchone()  # a snapshot at 100
        for seq in range(101, 150):  # below CHECKPOINT_FRAMES: the store's own checkpoint does not run
            store.insert_batch([rec(seq)])
        with caplog.at_level(logging.WARNING, logger="gateway.storage.store"):
            busy, frames, moved = external(db, "PRAGMA wal_checkpoint(PASSIVE)")[0]
            assert 0 < moved < frames
            assert store.check_file() is None
        assert HARMLESS in caplog.text
        reader.rollback()
        store.insert_batch([rec(150)])
        assert store.check_file() is None
    finally:
        reader.close()
        store.close()
    assert not side(db, "-wal.overwritten").exists()
    assert integrity(db) == "ok" and seqs(db) == (150, 150)


def test_a_cp_after_another_programs_checkpoint_is_still_found(tmp_path: Path) -> None:
    """The checkpoint moves the stamp on; a backup copied over the file afterwards is still an overwrite."""
    db, store = open_store(tmp_path, 600)
    bk = tmp_path / "bk.sqlite"
    snapshot(db, bk)
    for seq in range(601, 700):
        store.insert_batch([rec(seq)])
    external(db, "PRAGMA wal_checkpoint")
    assert store.check_file() is None
    store.insert_batch([rec(700)])
    cp(bk, db)
    try:
        problem = store.check_file()
        assert problem is not None and "overwritten in place" in problem
    finally:
        store.close()
    assert side(db, "-wal.overwritten").exists() and seqs(db) == (600, 600)


def test_a_cp_during_the_stores_own_checkpoint_says_the_size_is_wrong(tmp_path: Path) -> None:
    """Review E, LOW 2: the size of a whole checkpoint found wrong read 'its size went from -1 to N bytes'."""
    db = tmp_path / "reports.sqlite"
    db.write_bytes(b"x")
    f = FileIdentity(db, (0, 0), db)
    said = overwritten(f, MainStamp(-1, 1, b"h" * 100), MainStamp(8192, 2, b"h" * 100))
    assert said is not None and "-1" not in said.replace(str(tmp_path), "<tmp>")  # (pytest-1NN in the path)
    assert "its size (8192 bytes) is not the database's after a whole checkpoint" in said
