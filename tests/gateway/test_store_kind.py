"""The store refuses a file that is not a report store before it changes anything, as ``run --check`` does.

QA findings: ``gateway run`` with ``[storage] path`` naming the device registry's ``devices.sqlite``
wrote its tables into it and switched it to WAL (only ``run --check`` refused it, ``not_a_store``);
naming a text file made it 0600 and put a ``.lock`` beside it before SQLite found it was no database.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_env

from gateway.cli.run_check import check_store_file
from gateway.errors import StorageError
from gateway.storage import ReportStore
from gateway.storage.store_kind import ABSENT, EMPTY, STORE, store_kind


def civicedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil.cli.main", *args], capture_output=True, text=True, timeout=60)


def snapshot(path: Path) -> tuple[bytes, int, list[str]]:
    """The file's bytes and mode, and the names beside it."""
    return path.read_bytes(), stat.S_IMODE(path.stat().st_mode), sorted(os.listdir(path.parent))


def config_with_store(tmp_path: Path, store: Path) -> Path:
    config = make_env(tmp_path)
    config.write_text(config.read_text().replace("[storage]\n", '[storage]\npath = "%s"\n' % store))
    return config


def test_gateway_run_on_the_registry_database_refuses_it_untouched(tmp_path: Path) -> None:
    config = make_env(tmp_path)
    registry_db = tmp_path / "data" / "registry" / "devices.sqlite"
    config.write_text(config.read_text().replace("[storage]\n", '[storage]\npath = "%s"\n' % registry_db))
    conn = sqlite3.connect(registry_db)
    mode_before = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert mode_before != "wal"
    before = snapshot(registry_db)
    checked = civicedge("gateway", "run", "--config", str(config), "--check")
    done = civicedge("gateway", "run", "--config", str(config))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "error (not_a_store)" in done.stderr and "devices" in done.stderr
    assert checked.returncode == 1
    # the same reason and message from --check and run
    assert checked.stderr.strip().splitlines()[-1] == done.stderr.strip().splitlines()[-1]
    assert snapshot(registry_db) == before  # no tables, no WAL, no .lock, no -wal/-shm
    conn = sqlite3.connect(registry_db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == mode_before
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'reports'").fetchone() is None
    finally:
        conn.close()


@pytest.mark.parametrize("content", [b"[gateway]\nid = 'gw'\n" * 100, b"SQLite format 2\x00" + b"\x00" * 200, b"x"])
def test_a_file_that_is_no_database_is_refused_without_a_side_effect(tmp_path: Path, content: bytes) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(content)
    os.chmod(victim, 0o644)
    before = snapshot(victim)
    with pytest.raises(StorageError) as opened:
        ReportStore(victim, gateway_id="gw1")
    assert opened.value.reason == "open_failed" and "not a database" in str(opened.value)
    assert snapshot(victim) == before  # still 0644, and no victim.txt.lock beside it
    with pytest.raises(StorageError) as checked:
        check_store_file(victim, running=False)
    assert (checked.value.reason, str(checked.value)) == (opened.value.reason, str(opened.value))


def test_gateway_run_on_a_text_file_leaves_it_alone(tmp_path: Path) -> None:
    victim = tmp_path / "notes.txt"
    victim.write_text("the city's notes\n" * 50)
    os.chmod(victim, 0o644)
    config = config_with_store(tmp_path, victim)
    before = snapshot(victim)
    done = civicedge("gateway", "run", "--config", str(config))
    assert done.returncode == 1 and "error (open_failed)" in done.stderr and "not a database" in done.stderr
    assert snapshot(victim) == before


def test_a_foreign_database_is_refused_by_the_store_with_the_checks_message(tmp_path: Path) -> None:
    foreign = tmp_path / "app.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE meta (k TEXT, v TEXT)")  # a meta table of its own: no schema_version
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    before = snapshot(foreign)
    with pytest.raises(StorageError) as opened:
        ReportStore(foreign, gateway_id="gw1")
    assert opened.value.reason == "not_a_store" and "customers" in str(opened.value)
    with pytest.raises(StorageError) as checked:
        check_store_file(foreign, running=False)
    assert str(checked.value) == str(opened.value)
    assert snapshot(foreign) == before


def test_what_the_store_opens(tmp_path: Path) -> None:
    """Absent, empty (0 bytes, or a database without tables), a store, and a store whose first start
    was cut off before its schema_version was written: each opens."""
    assert store_kind(tmp_path / "none.sqlite") == ABSENT
    (tmp_path / "zero.sqlite").write_bytes(b"")
    assert store_kind(tmp_path / "zero.sqlite") == EMPTY
    sqlite3.connect(tmp_path / "blank.sqlite").execute("PRAGMA user_version=1").connection.close()
    assert store_kind(tmp_path / "blank.sqlite") == EMPTY
    for name in ("none.sqlite", "zero.sqlite", "blank.sqlite"):
        ReportStore(tmp_path / name, gateway_id="gw1").close()
        assert store_kind(tmp_path / name) == STORE
    cut = tmp_path / "cut.sqlite"
    conn = sqlite3.connect(cut)
    conn.executescript("CREATE TABLE reports (id INTEGER); CREATE TABLE chain (pos INTEGER);")
    conn.close()
    assert store_kind(cut) == STORE
    with pytest.raises(StorageError) as info:
        store_kind(tmp_path)
    assert info.value.reason == "open_failed" and "is a directory" in str(info.value)


def test_a_first_start_cut_off_part_way_leaves_an_empty_database(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema's tables are created in one transaction. Before, each CREATE committed on its own,
    so a first start cut off after `reports` left a database store_kind refused as not_a_store (review)."""
    from gateway.storage import schema

    db = tmp_path / "reports.sqlite"
    conn = sqlite3.connect(str(db), isolation_level=None)
    # a failure after the first tables of the script (as a crash part-way would leave it)
    monkeypatch.setattr(schema, "SCHEMA", schema.SCHEMA.replace("CREATE TABLE IF NOT EXISTS chain",
                                                                "CREATE TABLE broken (; CREATE TABLE IF NOT EXISTS chain"))
    with pytest.raises(sqlite3.Error):
        schema.apply_schema(conn)
    conn.close()
    assert store_kind(db) is EMPTY  # nothing half-made: the next start creates the store
    monkeypatch.undo()
    store = ReportStore(db, gateway_id="gw")
    store.close()
    assert store_kind(db) is STORE


def test_the_checks_read_a_stopped_store_immutable_unless_its_wal_holds_commits(tmp_path: Path) -> None:
    """One URI choice (sqlite_uri.check_uri) for store_kind and run --check's schema read: a stopped
    store without a -wal with content is read immutable (nothing left beside it), a -wal with content
    as any reader reads it unless the caller asks the main file alone, a held store as any reader."""
    from gateway.storage.sqlite_uri import check_uri, read_only_uri

    db = tmp_path / "reports.sqlite"
    ReportStore(db, gateway_id="gw1").close()
    plain = read_only_uri(db)
    assert plain.endswith("?mode=ro")  # a writable directory
    assert check_uri(db, running=False) == plain + "&immutable=1"
    assert check_uri(db, running=True) == plain
    (tmp_path / "reports.sqlite-wal").write_bytes(b"")  # what a read-only reader leaves behind
    assert check_uri(db, running=False) == plain + "&immutable=1"
    (tmp_path / "reports.sqlite-wal").write_bytes(b"\0" * 32)  # a killed gateway's commits
    assert check_uri(db, running=False) == plain
    assert check_uri(db, running=False, main_file_only=True) == plain + "&immutable=1"
    assert check_uri(db, running=True, main_file_only=True) == plain


def test_a_held_store_in_a_directory_we_cannot_write_is_not_read_immutable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review of 7c44c36: check_uri(running=True) returned read_only_uri's answer, which is
    ``immutable=1`` in a directory we cannot write with an empty ``-wal``; a gateway holding the store
    changes its main file under such a read. A held store is read plainly read-only there too."""
    from gateway.storage.sqlite_uri import check_uri, read_only_uri

    ro = tmp_path / "ro"
    ro.mkdir()
    db = ro / "reports.sqlite"
    ReportStore(db, gateway_id="gw1").close()
    (ro / "reports.sqlite-wal").write_bytes(b"")  # empty, as a reader leaves it
    ro.chmod(0o500)
    real_access = os.access
    # As root access() passes a 0500 directory, so answer as for an ordinary user.
    monkeypatch.setattr(os, "access", lambda p, mode: real_access(p, mode) and not (Path(p) == ro and mode & os.W_OK))
    try:
        assert read_only_uri(db).endswith("?mode=ro&immutable=1")  # the directory reads as unwritable
        assert check_uri(db, running=False) == db.resolve().as_uri() + "?mode=ro&immutable=1"
        assert check_uri(db, running=True) == db.resolve().as_uri() + "?mode=ro"
        assert check_uri(db, running=True, main_file_only=True) == db.resolve().as_uri() + "?mode=ro"
        assert store_kind(db, running=True) is STORE
    finally:
        ro.chmod(0o700)
