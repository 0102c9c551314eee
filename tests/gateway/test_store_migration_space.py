"""The room a store migration needs: from version 1, the dropped readings table's pages pass through the -wal.

Review (rev-mb M2): a v1 store passed the space check of the copy made before its migration, then the
migration failed with a bare "database or disk is full": secure_delete=ON (set at open, so values
retention removed do not stay on disk) makes DROP TABLE readings write every page it frees to the -wal.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.storage import ReportStore, schema_backup
from gateway.storage.schema import SCHEMA_VERSION, apply_schema
from tests.gateway.test_store_migration_atomic import dump, v1_store, v3_store

MB = 1_000_000


def big_v1_store(db: Path, rows: int = 60_000) -> int:
    """A v1 store with ``rows`` readings rows; the bytes its readings table and index take."""
    v1_store(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO readings VALUES (1, 'b1', 'bin', 'north', ?, ?, 900, 30)",
                     (("field%06d" % (i % 1000), 1_700_000_000 + i) for i in range(rows)))
    conn.execute("COMMIT")
    pages = conn.execute("SELECT COUNT(*) FROM dbstat WHERE name IN ('readings', 'readings_field_w')").fetchone()[0]
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return int(pages) * int(page)


def version(db: Path) -> str:
    conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        return str(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
    finally:
        conn.close()


def test_the_space_check_counts_the_readings_pages_the_drop_writes_to_the_wal(tmp_path: Path) -> None:
    """Test fails before: the need was the store, its -wal and the margin; the migration then wrote the
    whole readings table to the -wal (and it stayed that large until the first clean stop)."""
    db = tmp_path / "r.sqlite"
    readings = big_v1_store(db)
    assert readings > 2 * MB
    conn = sqlite3.connect(db)
    try:
        writes = schema_backup.migration_bytes(conn, 1)
        assert schema_backup.migration_bytes(conn, 3) == 0
    finally:
        conn.close()
    assert readings <= writes <= readings * 1.01  # every page plus its 24-byte frame header
    plan = schema_backup.plan_backup(db, 1, writes)
    assert plan.need == db.stat().st_size + writes + schema_backup.MARGIN_BYTES

    store = ReportStore(db, gateway_id="gw1")  # the migration itself: its -wal is emptied right after
    try:
        assert version(db) == str(SCHEMA_VERSION)
        assert os.path.getsize(str(db) + "-wal") == 0
    finally:
        store.close()


def test_too_little_room_for_the_migration_is_named_before_anything_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test fails before: the copy's need left out the readings pages, so the copy was made and the
    migration then failed with SQLite's bare 'database or disk is full'."""
    db = tmp_path / "r.sqlite"
    big_v1_store(db)
    before = dump(db)
    room = db.stat().st_size + schema_backup.MARGIN_BYTES + MB  # room for the copy alone
    monkeypatch.setattr(schema_backup, "free_bytes", lambda _path: room)
    with pytest.raises(StorageError) as info:
        ReportStore(db, gateway_id="gw1")
    assert info.value.reason == "no_space_for_backup"
    assert "the migration writes to the -wal" in str(info.value)
    assert dump(db) == before and version(db) == "1"
    assert not (tmp_path / "r.sqlite.schema-v1.bak").exists()

    # Without the copy, the migration's own need is checked.
    monkeypatch.setattr(schema_backup, "free_bytes", lambda _path: schema_backup.MARGIN_BYTES)
    with pytest.raises(StorageError) as info:
        ReportStore(db, gateway_id="gw1", backup_before_migration=False)
    assert info.value.reason == "no_space_for_migration"
    assert "migrate the report store %s from schema version 1 to %d" % (db, SCHEMA_VERSION) in str(info.value)
    assert dump(db) == before and version(db) == "1"


def test_sqlite_running_out_of_room_during_the_migration_is_no_space_for_migration(tmp_path: Path) -> None:
    """Test fails before: SQLite's bare 'database or disk is full' came out of the open."""
    db = tmp_path / "r.sqlite"
    v3_store(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("VACUUM")  # no free pages left: the new table and index must grow the file
    before = dump(db)
    try:
        # A full disk as SQLite meets it (SQLITE_FULL): the database may not grow by a page.
        conn.execute("PRAGMA max_page_count = %d" % conn.execute("PRAGMA page_count").fetchone()[0])
        with pytest.raises(StorageError) as info:
            apply_schema(conn, backup=False)
    finally:
        conn.close()
    assert info.value.reason == "no_space_for_migration"
    assert "from schema version 3 to %d (SQLite: database or disk is full)" % SCHEMA_VERSION in str(info.value)
    assert "the store was left unchanged" in str(info.value)
    assert dump(db) == before and version(db) == "3"


def test_run_check_counts_the_migrations_writes_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Test fails before: run --check said the copy fits, and the start then failed."""
    from hil.cli.main import main

    db = tmp_path / "r.sqlite"
    big_v1_store(db)
    config = tmp_path / "gateway.toml"
    config.write_text('[http]\nenabled = false\n[gateway]\ndata_dir = "%s"\n[storage]\npath = "%s"\n' % (tmp_path, db))
    monkeypatch.setattr(schema_backup, "free_bytes", lambda _path: db.stat().st_size + schema_backup.MARGIN_BYTES + MB)
    assert main(["gateway", "run", "--config", str(config), "--check"]) != 0
    err = capsys.readouterr().err
    assert "error (no_space_for_backup)" in err and "the migration writes to the -wal" in err, err
    config.write_text(config.read_text() + "backup_before_migration = false\n")
    monkeypatch.setattr(schema_backup, "free_bytes", lambda _path: MB)
    assert main(["gateway", "run", "--config", str(config), "--check"]) != 0
    assert "error (no_space_for_migration)" in capsys.readouterr().err
