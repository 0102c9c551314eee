"""A backup copied over the running store, then checkpointed into by another program (review 1, HIGH).

After a whole checkpoint SQLite sets the main file to exactly the database's size and writes page 1 from the
log, so size and header are what a checkpoint leaves whatever was copied over the file before it; the -shm
says another program checkpointed, and TRUNCATE leaves the count of commits as it was. The store's stamp page
(store_stamp, a new token before each of its own checkpoints; gateway.storage.store_guard) tells the copy.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.storage import ReportStore

from test_store_foreign_checkpoint import external, open_store
from test_store_overwrite_races import rec, side


def cp_by_another_process(src: Path, dst: Path) -> None:
    subprocess.run(["cp", str(src), str(dst)], check=True, timeout=60)


def assert_refused_as_overwritten(db: Path, store: ReportStore, problem: str | None, next_seq: int) -> None:
    assert problem is not None and "was overwritten in place" in problem, problem
    assert "stamp page does not hold the token" in problem
    assert store.file_gone
    with pytest.raises(StorageError) as err:
        store.insert_batch([rec(next_seq)])
    assert err.value.reason == "file_gone"
    store.close()
    assert side(db, "-shm.overwritten").exists()  # set aside, as for a cp found directly
    assert not side(db, "-shm").exists()


@pytest.mark.parametrize("mode", ["TRUNCATE", "PASSIVE", "FULL", "RESTART"])
def test_an_old_backup_then_another_programs_checkpoint_is_overwritten(tmp_path: Path, mode: str) -> None:
    """Fails before: check_file() None (the checkpoint excused, TRUNCATE's data_version move too), the next
    batch committed and acknowledged into a file mixing the backup with the gateway's latest pages."""
    db, store = open_store(tmp_path, 150)
    backup = tmp_path / "bk.sqlite"
    store._checkpoint()
    cp_by_another_process(db, backup)
    for seq in range(151, 250):
        store.insert_batch([rec(seq)])
    store._checkpoint()  # the store's own checkpoint (after CHECKPOINT_FRAMES frames in the gateway)
    for seq in range(250, 300):
        store.insert_batch([rec(seq)])  # in the -wal only
    assert store.check_file() is None
    ino = db.stat().st_ino
    cp_by_another_process(backup, db)
    assert db.stat().st_ino == ino  # overwritten in place
    external(db, "PRAGMA wal_checkpoint(%s)" % mode)
    assert_refused_as_overwritten(db, store, store.check_file(), 300)


def test_the_reviewers_scenario_with_the_stores_own_checkpoints(tmp_path: Path) -> None:
    """The reported repro: 900 commits after the backup, the store checkpointing on its own at 1000 frames,
    the copy and the checkpoint found by the watch (check_file)."""
    db, store = open_store(tmp_path, 300)
    backup = tmp_path / "bk.sqlite"
    store._checkpoint()
    cp_by_another_process(db, backup)
    for seq in range(301, 1200):
        store.insert_batch([rec(seq)])
    cp_by_another_process(backup, db)
    external(db, "PRAGMA wal_checkpoint(TRUNCATE)")
    assert_refused_as_overwritten(db, store, store.check_file(), 1200)


def test_another_programs_checkpoints_of_the_gateways_own_content_stay_harmless(tmp_path: Path) -> None:
    """The stamp does not make a checkpoint of the gateway's own content suspect: any mode, also right
    after the store's own checkpoint and across a restart (the stamp renewed at the open)."""
    db, store = open_store(tmp_path, 100)
    try:
        for i, mode in enumerate(["TRUNCATE", "PASSIVE", "RESTART", "FULL", "TRUNCATE"]):
            for seq in range(1000 + 50 * i, 1050 + 50 * i):
                store.insert_batch([rec(seq)])
            if i % 2:
                store._checkpoint()
            external(db, "PRAGMA wal_checkpoint(%s)" % mode)
            assert store.check_file() is None
        store.insert_batch([rec(5000)])
    finally:
        store.close()
    store = ReportStore(db, gateway_id="gw-test")
    try:
        external(db, "PRAGMA wal_checkpoint(TRUNCATE)")
        assert store.check_file() is None
        store.insert_batch([rec(5001)])
        assert store.has("bin-1", 5001)
    finally:
        store.close()
    assert not side(db, "-wal.overwritten").exists()


def test_a_backup_taken_before_the_last_stop_is_not_the_gateways(tmp_path: Path) -> None:
    """A copy of the file from an earlier run, taken before that run's stop checkpointed its last reports
    (renewing the stamp first), copied over the store of the next run and checkpointed into: told."""
    db, store = open_store(tmp_path, 100)
    store._checkpoint()
    backup = tmp_path / "bk.sqlite"
    cp_by_another_process(db, backup)
    for seq in range(101, 130):
        store.insert_batch([rec(seq)])  # in the -wal, then in the file at the stop: not in the backup
    store.close()
    store = ReportStore(db, gateway_id="gw-test")
    for seq in range(130, 160):
        store.insert_batch([rec(seq)])
    cp_by_another_process(backup, db)
    external(db, "PRAGMA wal_checkpoint(TRUNCATE)")
    assert_refused_as_overwritten(db, store, store.check_file(), 160)


def test_a_stamp_a_reader_kept_out_of_the_file_is_accepted_once_another_program_checkpoints_it(
        tmp_path: Path) -> None:
    """A reader's snapshot keeps the store's checkpoint (and its new token) out of the file; another
    program's checkpoint later copies that token in: the gateway's own, harmless. A copy of the file from
    before is still told afterwards."""
    db, store = open_store(tmp_path, 100)
    backup = tmp_path / "bk.sqlite"
    store._checkpoint()
    cp_by_another_process(db, backup)
    for seq in range(101, 140):
        store.insert_batch([rec(seq)])
    reader = sqlite3.connect(db)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM reports").fetchone()  # a snapshot of the log as it is now
    store._checkpoint()  # cut short: the new token stays in the -wal only
    assert len(store._tokens) == 2
    for seq in range(140, 150):
        store.insert_batch([rec(seq)])
    reader.rollback()
    reader.close()
    external(db, "PRAGMA wal_checkpoint(PASSIVE)")  # copies the rest, the new token with it
    assert store.check_file() is None
    assert len(store._tokens) == 1
    store.insert_batch([rec(150)])
    cp_by_another_process(backup, db)
    external(db, "PRAGMA wal_checkpoint(TRUNCATE)")
    assert_refused_as_overwritten(db, store, store.check_file(), 151)


def test_a_backup_taken_before_an_unclean_stop_is_not_the_gateways(tmp_path: Path) -> None:
    """After an unclean stop (the -wal left with commits, as a kill leaves it) the open renews the stamp before
    its checkpoint of that -wal: a copy of the file taken before is told."""
    db, store = open_store(tmp_path, 100)
    store._checkpoint()
    backup = tmp_path / "bk.sqlite"
    cp_by_another_process(db, backup)
    for seq in range(101, 130):
        store.insert_batch([rec(seq)])
    killed = tmp_path / "killed"
    killed.mkdir()
    for suffix in ("", "-wal"):  # the files as a kill leaves them (SQLite rebuilds the -shm)
        cp_by_another_process(Path(str(db) + suffix), killed / ("reports.sqlite" + suffix))
    store.close()
    db = killed / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    assert not side(db, "-wal").exists() or side(db, "-wal").stat().st_size == 0  # checkpointed at the open
    for seq in range(130, 160):
        store.insert_batch([rec(seq)])
    cp_by_another_process(backup, db)
    external(db, "PRAGMA wal_checkpoint(TRUNCATE)")
    assert_refused_as_overwritten(db, store, store.check_file(), 160)
