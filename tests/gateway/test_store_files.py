"""The report store's files on disk: modes after a restore, and one writer whatever name the store is opened by.

Each case was a QA finding (a restored backup's -wal/-shm were world-readable; a symlink to a running
gateway's store let a second gateway write it).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.storage.store import ReportRecord, ReportStore, check_store_free, store_writer


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def record(seq: int) -> ReportRecord:
    return ReportRecord(device="b1", seq=seq, kind="bin", zone="north", type="win", w=1_700_000_000 + 900 * seq,
                        l=900, m={"fill": 40}, e={}, a=[], fw="1.0", received_at=1_700_000_000.0, link="serial:x",
                        digest="%064x" % seq)


def make_store(db: Path) -> Path:
    store = ReportStore(db, gateway_id="gw1")
    store.insert_batch([record(1), record(2)])
    store.close()
    return db


def test_a_restored_backup_gets_private_wal_and_shm(tmp_path: Path) -> None:
    """docs/gateway.md, Restoring a backup: the backup (in WAL mode, as sqlite3 .backup copies it) copied
    into place with the umask's 0644; SQLite created its -wal and -shm with that mode at the first PRAGMA."""
    db = make_store(tmp_path / "data" / "reports.sqlite")
    backup = tmp_path / "bk.sqlite"
    with sqlite3.connect(db) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    src.close()
    dst.close()
    db.unlink()
    shutil.copyfile(backup, db)
    os.chmod(db, 0o644)
    assert sqlite3.connect(backup).execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # what made SQLite create them
    store = ReportStore(db, gateway_id="gw1")
    try:
        for name in ("reports.sqlite", "reports.sqlite-wal", "reports.sqlite-shm"):
            assert mode(db.with_name(name)) == 0o600, name
        assert store.max_seqs() == {"b1": 2}
    finally:
        store.close()


def test_existing_wide_wal_and_shm_are_tightened_at_open(tmp_path: Path) -> None:
    db = make_store(tmp_path / "reports.sqlite")
    keep = sqlite3.connect(db)  # a reader keeps the -wal and -shm in place across the close below
    keep.execute("SELECT COUNT(*) FROM reports").fetchone()
    try:
        for name in ("reports.sqlite", "reports.sqlite-wal", "reports.sqlite-shm"):
            os.chmod(db.with_name(name), 0o644)  # left by a version before the rule, or a killed gateway
        ReportStore(db, gateway_id="gw1").close()
        for name in ("reports.sqlite", "reports.sqlite-wal", "reports.sqlite-shm"):
            assert mode(db.with_name(name)) == 0o600, name
    finally:
        keep.close()


def test_a_new_store_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        store = ReportStore(tmp_path / "reports.sqlite", gateway_id="gw1")
    finally:
        os.umask(old)
    try:
        for name in ("reports.sqlite", "reports.sqlite-wal", "reports.sqlite-shm"):
            assert mode(tmp_path / name) == 0o600, name
    finally:
        store.close()


@pytest.mark.parametrize("link", ["file", "directory"])
def test_a_symlink_to_a_running_store_is_refused_as_in_use(tmp_path: Path, link: str) -> None:
    db = tmp_path / "gw1" / "data" / "reports.sqlite"
    first = ReportStore(db, gateway_id="gw1")
    try:
        (tmp_path / "gw4").mkdir()
        if link == "file":
            other = tmp_path / "gw4" / "link.sqlite"
            other.symlink_to(db)
        else:
            (tmp_path / "gw4" / "data").symlink_to(db.parent)
            other = tmp_path / "gw4" / "data" / "reports.sqlite"
        assert store_writer(other) == str(os.getpid())
        with pytest.raises(StorageError) as info:
            check_store_free(other)
        assert info.value.reason == "in_use"
        with pytest.raises(StorageError, match=r"in use by another gateway \(pid %d\)" % os.getpid()) as info:
            ReportStore(other, gateway_id="gw4")
        assert info.value.reason == "in_use"
        assert str(info.value).startswith("report store %s (%s) is in use" % (other, db))  # names the file itself
        assert sorted(p.name for p in (tmp_path / "gw4").iterdir()) == [other.name if link == "file" else "data"]
    finally:
        first.close()
    second = ReportStore(other, gateway_id="gw4")  # once the first stopped, the link opens the store itself
    try:
        assert second.max_seqs() == {} and store_writer(db) == str(os.getpid())
        assert (db.parent / "reports.sqlite-wal").exists()  # SQLite's -wal is next to the file, like the lock
    finally:
        second.close()


def test_a_store_with_a_second_name_is_refused(tmp_path: Path) -> None:
    db = make_store(tmp_path / "gw1" / "reports.sqlite")
    (tmp_path / "gw4").mkdir()
    other = tmp_path / "gw4" / "hard.sqlite"
    os.link(db, other)
    for name in (db, other):
        with pytest.raises(StorageError, match="has 2 names") as info:
            ReportStore(name, gateway_id="gw")
        assert info.value.reason == "hard_linked" and "sqlite3 .backup" in str(info.value)
        with pytest.raises(StorageError) as info:
            check_store_free(name)
        assert info.value.reason == "hard_linked"
    assert not (tmp_path / "gw4" / "hard.sqlite.lock").exists() and not (tmp_path / "gw4" / "hard.sqlite-wal").exists()
    other.unlink()
    ReportStore(db, gateway_id="gw1").close()
    check_store_free(db)
