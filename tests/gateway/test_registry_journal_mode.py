"""The registry stays in rollback-journal mode, the mode in which a key change waits for a backup's read.

Was: the registry never set a journal mode, so one put in WAL (by hand, by a tool) stayed there, and in WAL a
reader does not hold off ``BEGIN EXCLUSIVE``: `gateway backup` then silently copied rows and key files of
different moments (a row of key version 1 beside the key of version 2)."""

from __future__ import annotations

import argparse
import logging
import sqlite3
from pathlib import Path

import pytest
from conftest import make_env

from gateway.cli import backup_cmd
from gateway.cli.common import config_from
from gateway.registry import Registry
from gateway.storage import ReportStore


def _journal_mode(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def _to_wal(db: Path) -> sqlite3.Connection:
    """Put ``db`` in WAL mode, as an operator's sqlite3 would; the connection stays open (the caller closes it)."""
    conn = sqlite3.connect(db, isolation_level=None)
    assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    return conn


def test_an_open_sets_a_wal_registry_back_to_rollback_journal(tmp_path: Path) -> None:
    make_env(tmp_path)
    registry = tmp_path / "data" / "registry"
    _to_wal(registry / "devices.sqlite").close()
    assert _journal_mode(registry / "devices.sqlite") == "wal"
    reg = Registry(registry)
    try:
        assert _journal_mode(registry / "devices.sqlite") == "delete"
        assert not (registry / "devices.sqlite-wal").exists()
        assert reg.get("bin-1").key_version == 1
    finally:
        reg.close()


def test_a_wal_registry_another_process_holds_still_opens_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Leaving WAL needs the database to itself: "database is locked" must not fail a gateway's start."""
    make_env(tmp_path)
    registry = tmp_path / "data" / "registry"
    holder = _to_wal(registry / "devices.sqlite")  # e.g. a sqlite3 shell left open, having read the registry
    holder.execute("SELECT count(*) FROM devices").fetchone()
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.registry.devices"):
            reg = Registry(registry)
        try:
            assert reg.get("bin-1").key_version == 1
            reg.rotate_key("bin-1")
            assert reg.get("bin-1").key_version == 2
        finally:
            reg.close()
        assert [r.getMessage() for r in caplog.records if "WAL" in r.getMessage()] == [
            "registry %s is in WAL journal mode and could not be set back to rollback-journal mode (database is "
            "locked: another process has it open); it works, but `gateway backup` refuses it until the next open "
            "with nothing else holding it (restart the gateway then)" % registry]
    finally:
        holder.close()
    Registry(registry).close()  # the registry to itself now
    assert _journal_mode(registry / "devices.sqlite") == "delete"


def test_a_backup_of_a_wal_registry_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    make_env(tmp_path)
    ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test").close()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw-test"\ndata_dir = "data"\n[http]\nenabled = false\n')
    db = tmp_path / "data" / "registry" / "devices.sqlite"
    _to_wal(db).close()
    config = config_from(argparse.Namespace(config=cfg), read_only=True)
    with pytest.raises(backup_cmd.BackupError) as err:
        backup_cmd.make_backup(config, tmp_path / "b")
    assert err.value.reason == "registry_wal" and err.value.path == db
    assert "is in WAL journal mode" in str(err.value) and "restart the gateway" in str(err.value)
    assert not (tmp_path / "b").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.")] == []

    Registry(db.parent).close()  # what the gateway's start does
    backup_cmd.make_backup(config, tmp_path / "b")
    assert (tmp_path / "b" / "devices.sqlite").is_file()
