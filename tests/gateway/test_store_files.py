"""The report store's files on disk: modes after a restore, and one writer whatever name the store is opened by.

Each case was a QA finding (a restored backup's -wal/-shm were world-readable; a symlink to a running
gateway's store let a second gateway write it).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.storage.store import ReportRecord, ReportStore
from gateway.storage.store_files import check_store_free, store_writer


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
        with pytest.raises(StorageError, match=r"in use by another gateway or a running civicedge gateway backup \(pid %d\)" % os.getpid()) as info:
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
        assert info.value.reason == "hard_linked" and "civicedge gateway backup" in str(info.value)
        with pytest.raises(StorageError) as info:
            check_store_free(name)
        assert info.value.reason == "hard_linked"
    assert not (tmp_path / "gw4" / "hard.sqlite.lock").exists() and not (tmp_path / "gw4" / "hard.sqlite-wal").exists()
    other.unlink()
    ReportStore(db, gateway_id="gw1").close()
    check_store_free(db)


def repoint(link: Path, target: Path) -> None:
    """Re-point the symlink ``link`` at ``target`` atomically, as an operator's ``ln -sfn`` + ``mv -T`` does."""
    tmp = link.with_name(link.name + ".new")
    os.symlink(target, tmp)
    os.replace(tmp, link)


@pytest.mark.parametrize("link", ["file", "directory"])
def test_a_re_pointed_symlink_is_a_replaced_store(tmp_path: Path, link: str) -> None:
    """Review finding (regression of the symlink fix): only the old target was watched, so the gateway went on
    committing and ACKing into it while the next start would open the new one (the ACKed reports missing)."""
    a = make_store(tmp_path / "a" / "reports.sqlite")
    b = make_store(tmp_path / "b" / "reports.sqlite")
    if link == "file":
        name = tmp_path / "reports.sqlite"
        name.symlink_to(a)
        new_target = b
    else:
        (tmp_path / "data").symlink_to(a.parent)
        name = tmp_path / "data" / "reports.sqlite"
        new_target = b.parent
    store = ReportStore(name, gateway_id="gw1")
    try:
        store.insert_batch([record(3)])
        assert store.file_problem() is None
        repoint(name if link == "file" else tmp_path / "data", new_target)
        problem = store.file_problem()
        assert problem is not None and "replaced" in problem and str(name) in problem and str(b) in problem
        with pytest.raises(StorageError) as info:
            store.insert_batch([record(4)])
        assert info.value.reason == "file_gone"
    finally:
        store.close()
    with sqlite3.connect(a) as conn:
        assert [r[0] for r in conn.execute("SELECT seq FROM reports ORDER BY seq")] == [1, 2, 3]  # 4 not committed
    conn.close()


def test_a_symlink_re_pointed_while_the_store_opens_is_refused(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Review finding: the link was resolved twice (for the connection, then for the lock), so a link
    re-pointed in between had the gateway hold B's lock and write A, which a second gateway could then open."""
    import gateway.storage.store as store_module

    a = make_store(tmp_path / "a" / "reports.sqlite")
    b = make_store(tmp_path / "b" / "reports.sqlite")
    name = tmp_path / "reports.sqlite"
    name.symlink_to(a)
    resolve = store_module.real_store_path
    calls = []

    def resolve_then_repoint(path: Path) -> Path:
        real = resolve(path)
        calls.append(real)
        if len(calls) == 1:
            repoint(name, b)  # between the gateway's resolving the name and its taking the lock
        return real

    monkeypatch.setattr(store_module, "real_store_path", resolve_then_repoint)
    with pytest.raises(StorageError) as info:
        ReportStore(name, gateway_id="gw1")
    assert info.value.reason == "path_changed"
    assert "it named %s, now %s" % (a, b) in str(info.value)
    assert store_writer(a) is None and store_writer(b) is None  # no lock left held
    assert not a.with_name("reports.sqlite-wal").exists()  # nothing opened
    monkeypatch.undo()
    store = ReportStore(name, gateway_id="gw1")  # settled: opens, locks and watches B
    try:
        assert store_writer(b) == str(os.getpid()) and store_writer(a) is None
        assert store.file_problem() is None
    finally:
        store.close()


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_a_symlinked_wal_or_shm_is_refused_and_not_followed(tmp_path: Path, suffix: str) -> None:
    """Review finding: the mode check followed a symlinked -wal/-shm (chmod of the file it names), and SQLite
    wrote the store's log through it."""
    db = make_store(tmp_path / "data" / "reports.sqlite")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"")
    os.chmod(elsewhere, 0o644)
    wal = db.with_name(db.name + suffix)
    wal.symlink_to(elsewhere)
    with pytest.raises(StorageError) as info:
        ReportStore(db, gateway_id="gw1")
    assert info.value.reason == "symlinked"
    assert "%s is a symlink (to %s)" % (wal, elsewhere) in str(info.value) and "mv %s %s" % (elsewhere, wal) in str(info.value)
    assert mode(elsewhere) == 0o644 and elsewhere.read_bytes() == b""  # neither chmod'ed nor written
    assert store_writer(db) is None
    with pytest.raises(StorageError) as info:  # run --check refuses it too, and creates nothing
        check_store_free(db)
    assert info.value.reason == "symlinked"
    assert sorted(p.name for p in db.parent.iterdir()) == sorted(["reports.sqlite", wal.name, "reports.sqlite.lock"])


def test_a_file_of_another_user_is_refused_with_the_chown_that_fixes_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Review finding: a -wal restored as root gave the gateway's user 'open_failed: [Errno 1] Operation not
    permitted: ...-wal' (the chmod), with no word of whose file it is or what to do."""
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    db = make_store(tmp_path / "data" / "reports.sqlite")
    keep = sqlite3.connect(db)  # keeps the -wal and -shm in place, as a killed gateway leaves them
    keep.execute("SELECT COUNT(*) FROM reports").fetchone()
    try:
        gateway_uid = 4242  # the gateway's user; the -wal stays root's, as a restore done as root leaves it
        for p in (db.parent, db, db.with_name("reports.sqlite-shm"), db.with_name("reports.sqlite.lock")):
            os.chown(p, gateway_uid, -1)
        wal = db.with_name("reports.sqlite-wal")
        os.chmod(wal, 0o644)
        monkeypatch.setattr(os, "geteuid", lambda: gateway_uid)
        with pytest.raises(StorageError) as info:
            ReportStore(db, gateway_id="gw1")
        assert info.value.reason == "not_owned"
        assert "%s is owned by uid 0 (root), not by the gateway's user uid 4242" % wal in str(info.value)
        assert str(info.value).endswith("give it back with: chown 4242 %s" % wal)
        assert mode(wal) == 0o644
        with pytest.raises(StorageError) as info:  # run --check refuses it too
            check_store_free(db)
        assert info.value.reason == "not_owned"
    finally:
        keep.close()


def test_the_hard_link_refusal_says_how_to_break_the_link(tmp_path: Path) -> None:
    """Review finding: a dedup tool (hardlink, jdupes -L, rdfind) or a cp -al restore leaves the gateway down at
    its next start; the refusal gives the command that gives the store a file of its own, and that command works."""
    db = make_store(tmp_path / "data" / "reports.sqlite")
    (tmp_path / "backups").mkdir()
    os.link(db, tmp_path / "backups" / "reports.sqlite")  # as `hardlink`/`jdupes -L` leave a copy and the store
    with pytest.raises(StorageError) as info:
        ReportStore(db, gateway_id="gw1")
    fix = "cp -p {0} {0}.new && mv {0}.new {0}".format(db)
    assert info.value.reason == "hard_linked" and fix in str(info.value)
    subprocess.run(["sh", "-c", fix], check=True, timeout=30)
    store = ReportStore(db, gateway_id="gw1")
    try:
        assert store.max_seqs() == {"b1": 2} and mode(db) == 0o600
    finally:
        store.close()
    assert (tmp_path / "backups" / "reports.sqlite").stat().st_nlink == 1
