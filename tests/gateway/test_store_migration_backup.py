"""Before the one-way migration of an older store, a copy of it is made next to it (upgrade drill).

Before: nothing was copied, and "back up before upgrading" was logged only after the migration had
committed, when an older gateway could no longer open the store.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from gateway.config.loader import parse_config
from gateway.errors import ConfigError, StorageError
from gateway.registry import Registry
from gateway.storage import ReportStore
from gateway.storage import schema_backup
from gateway.storage.schema import SCHEMA_VERSION
from hil.cli.main import main
from tests.gateway.test_store_migration_atomic import dump, rec, v1_store, v3_store


def version(db: Path) -> str:
    conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        return str(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
    finally:
        conn.close()


def test_an_older_store_is_copied_before_it_is_migrated_and_the_warning_comes_first(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Test fails before: no copy, and the only WARNING came after the commit."""
    db = tmp_path / "r.sqlite"
    v3_store(db)
    before = dump(db)
    copy = tmp_path / "r.sqlite.schema-v3.bak"
    seen: list[tuple[str, str, bool]] = []

    class AtWarning(logging.Handler):  # what the store and the copy are when each WARNING is logged
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.WARNING:
                seen.append((record.getMessage(), version(db), copy.exists()))

    handler = AtWarning()
    logging.getLogger("gateway.storage.schema").addHandler(handler)
    try:
        store = ReportStore(db, gateway_id="gw1")
    finally:
        logging.getLogger("gateway.storage.schema").removeHandler(handler)
    store.insert_batch([rec("b1", 3, {"fill": 40})])  # the new gateway goes on; the copy does not change
    store.close()
    size = "%d MB" % -(-copy.stat().st_size // 1_000_000)
    assert seen[0] == ("report store %s is at schema version 3; migrating to %d (one way: older gateways refuse it "
                       "afterwards); a copy of the store as it is now: %s (%s) — keep it until the new version "
                       "runs well, then delete it" % (db, SCHEMA_VERSION, copy, size), "3", True)
    assert seen[1][1:] == (str(SCHEMA_VERSION), True) and "the store as it was: %s" % copy in seen[1][0]
    assert len(seen) == 2
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert dump(copy) == before  # the store as it was: version 3, its tables and rows
    assert version(db) == str(SCHEMA_VERSION)
    assert sorted(p.name for p in tmp_path.iterdir() if "bak" in p.name) == [copy.name]  # no temporary left


def test_rolling_back_with_the_copy_as_docs_say_gives_the_old_store(tmp_path: Path) -> None:
    """docs/gateway.md: stop the new gateway, remove the migrated store's -wal/-shm, move the copy into place."""
    db = tmp_path / "r.sqlite"
    v1_store(db)
    before = dump(db)
    store = ReportStore(db, gateway_id="gw1")
    store.insert_batch([rec("b1", 3, {"fill": 40})])
    store.close()
    for leftover in (Path(str(db) + "-wal"), Path(str(db) + "-shm")):
        leftover.unlink(missing_ok=True)
    os.replace(tmp_path / "r.sqlite.schema-v1.bak", db)
    assert version(db) == "1" and dump(db) == before


def test_an_earlier_copy_and_a_cut_off_temporary_are_replaced(tmp_path: Path) -> None:
    """An earlier attempt cut off (the store stayed at its version) left its copy, or half a temporary one."""
    db = tmp_path / "r.sqlite"
    v3_store(db)
    before = dump(db)
    copy = tmp_path / "r.sqlite.schema-v3.bak"
    copy.write_bytes(b"an earlier copy")
    copy.chmod(0o644)
    tmp = tmp_path / "r.sqlite.schema-v3.bak.tmp"
    tmp.write_bytes(b"half a copy")
    ReportStore(db, gateway_id="gw1").close()
    assert dump(copy) == before and stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert not tmp.exists()


def test_a_new_store_and_a_current_one_get_no_copy(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "r.sqlite"
    with caplog.at_level(logging.WARNING, logger="gateway.storage"):
        ReportStore(db, gateway_id="gw1").close()
        ReportStore(db, gateway_id="gw1").close()
    assert [p.name for p in tmp_path.iterdir() if ".bak" in p.name] == []
    assert not caplog.records


def test_too_little_space_for_the_copy_refuses_to_start_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "r.sqlite"
    v3_store(db)
    before, raw = dump(db), db.read_bytes()
    # the file system as if nearly full (statvfs cannot be made to say so in a test otherwise)
    monkeypatch.setattr(schema_backup, "free_bytes", lambda _path: 5_000_000)
    with pytest.raises(StorageError) as info:
        ReportStore(db, gateway_id="gw1")
    err = info.value
    need = db.stat().st_size + schema_backup.MARGIN_BYTES
    assert err.reason == "no_space_for_backup"
    assert ("the copy %s.schema-v3.bak needs %d MB free (the store and its -wal plus 64 MB), 5 MB is free"
            % (db, -(-need // 1_000_000))) in str(err)
    assert "[storage] backup_before_migration = false" in str(err) and "Free space there" in str(err)
    assert db.read_bytes() == raw and dump(db) == before
    assert [p.name for p in tmp_path.iterdir() if ".bak" in p.name] == []


def test_backup_before_migration_false_migrates_without_a_copy_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "r.sqlite"
    v3_store(db)
    monkeypatch.setattr(schema_backup, "free_bytes", lambda _path: 0)  # the backup was made elsewhere
    with caplog.at_level(logging.WARNING, logger="gateway.storage"):
        ReportStore(db, gateway_id="gw1", backup_before_migration=False).close()
    assert version(db) == str(SCHEMA_VERSION)
    assert [p.name for p in tmp_path.iterdir() if ".bak" in p.name] == []
    assert "no copy of it is made first ([storage] backup_before_migration = false)" in caplog.records[0].getMessage()


def test_the_config_key(tmp_path: Path) -> None:
    def storage(text: str) -> object:
        return parse_config({"gateway": {"data_dir": str(tmp_path)}, "storage": text}, source=None).storage

    assert storage({}).backup_before_migration is True  # type: ignore[arg-type,attr-defined]
    off = storage({"backup_before_migration": False})  # type: ignore[arg-type]
    assert off.backup_before_migration is False  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as info:
        storage({"backup_before_migration": "no"})  # type: ignore[arg-type]
    assert info.value.reason == "wrong_type" and "storage.backup_before_migration must be true or false" in str(
        info.value)


def _config(tmp_path: Path, db: Path, extra: str = "") -> list[str]:
    config = tmp_path / "gateway.toml"
    # the store holds reports: a gateway refuses to start with no registry beside it (registry_missing)
    Registry(tmp_path / "registry").close()
    config.write_text('[http]\nenabled = false\n[gateway]\ndata_dir = "%s"\n[storage]\npath = "%s"\n%s'
                      % (tmp_path, db, extra))
    return ["gateway", "run", "--config", str(config), "--check"]


def test_run_check_says_the_migration_is_one_way_and_where_the_copy_goes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "r.sqlite"
    v3_store(db)
    raw = db.read_bytes()
    assert main(_config(tmp_path, db)) == 0
    out = capsys.readouterr().out
    assert ("store %s: readable; schema version 3: migrated to %d at start, one way (older gateways refuse it "
            "afterwards); a copy of the store as it is now is made first: %s.schema-v3.bak (needs "
            % (db, SCHEMA_VERSION, db)) in out

    assert main(_config(tmp_path, db, "backup_before_migration = false\n")) == 0
    assert ("no copy of it is made first ([storage] backup_before_migration = false): keep the backup made elsewhere"
            in capsys.readouterr().out)

    monkeypatch.setattr(schema_backup, "free_bytes", lambda _path: 1_000_000)
    assert main(_config(tmp_path, db)) == 1
    captured = capsys.readouterr()
    assert "config OK" not in captured.out
    assert captured.err.startswith("error (no_space_for_backup): not enough free space to copy the report store "
                                   "%s before migrating it from schema version 3 to %d" % (db, SCHEMA_VERSION))
    assert db.read_bytes() == raw and not list(tmp_path.glob("*.bak*"))  # the check copies nothing


def test_run_check_of_a_new_or_current_store_says_nothing_of_a_copy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    assert main(_config(tmp_path, db)) == 0
    ReportStore(db, gateway_id="gw1").close()
    assert main(_config(tmp_path, db)) == 0
    assert "copy" not in capsys.readouterr().out


async def test_the_gateway_takes_the_setting_from_its_config(tmp_path: Path) -> None:
    """The service passes [storage] backup_before_migration to its store (it made the copy whatever the key)."""
    from gateway.config.loader import load_config
    from gateway.service import Gateway

    for value, copied in (("true", True), ("false", False)):
        root = tmp_path / value
        root.mkdir()
        db = root / "r.sqlite"
        v3_store(db)
        Registry(root / "registry").close()  # the store holds reports: no start without a registry
        config = root / "gateway.toml"
        config.write_text('[http]\nenabled = false\n[gateway]\ndata_dir = "%s"\n[storage]\npath = "%s"\n'
                          'backup_before_migration = %s\n' % (root, db, value))
        gw = Gateway(load_config(config))
        try:
            assert version(db) == str(SCHEMA_VERSION)
            assert (root / "r.sqlite.schema-v3.bak").exists() is copied, value
        finally:
            await gw.stop()


def test_every_start_and_run_check_name_the_copy_that_is_outside_retention(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    """Test fails before: after the migration's WARNING nothing named the copy again, and it kept every value
    retention removed from the store, indefinitely (review rev-mb M4)."""
    real = tmp_path / "disk" / "r.sqlite"
    real.parent.mkdir()
    v3_store(real)
    db = tmp_path / "r.sqlite"
    db.symlink_to(real)  # [storage] path a symlink: the copy is next to the file itself
    ReportStore(db, gateway_id="gw1").close()  # the migration, and its copy
    copy = real.parent / "r.sqlite.schema-v3.bak"
    old = copy.stat().st_mtime - 3 * 86400
    os.utime(copy, (old, old))
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gateway.storage"):
            ReportStore(db, gateway_id="gw1").close()
        said = [r.getMessage() for r in caplog.records if ".bak" in r.getMessage()]
        assert len(said) == 1, said  # once per start
        size = "%d MB" % -(-copy.stat().st_size // 1_000_000)
        assert said[0] == ("report store %s: %s (3 days old, %s): the copy made before a store migration still holds "
                           "the store as it was, values retention has since removed included (outside retention): "
                           "delete it once this release runs well" % (real, copy, size)), said
    assert main(_config(tmp_path, db)) == 0
    out = capsys.readouterr().out
    assert "store %s: readable; %s (3 days old, " % (db, copy) in out and "outside retention" in out
    copy.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gateway.storage"):
        ReportStore(db, gateway_id="gw1").close()
    assert not [r for r in caplog.records if ".bak" in r.getMessage()]


def test_a_copy_cut_off_earlier_is_removed_at_start_whatever_the_setting(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Test fails before: with backup_before_migration = false (or no migration) a full-size .bak.tmp left by a
    kill during an earlier copy stayed forever (review rev-mb L7)."""
    db = tmp_path / "r.sqlite"
    v3_store(db)
    tmp = tmp_path / "r.sqlite.schema-v3.bak.tmp"
    tmp.write_bytes(db.read_bytes())
    (tmp_path / "r.sqlite.schema-v3.bak.tmp-journal").write_bytes(b"x")
    with caplog.at_level(logging.INFO, logger="gateway.storage"):
        ReportStore(db, gateway_id="gw1", backup_before_migration=False).close()
    assert sorted(p.name for p in tmp_path.iterdir() if ".bak" in p.name) == []
    assert "removed %s, a copy of the report store cut off before it was complete" % tmp in caplog.text


def test_schema_too_new_names_the_copy_to_go_back_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test fails before: the error named no way back though the copy made before the migration was there
    (review rev-mb L8)."""
    from gateway.storage import schema

    db = tmp_path / "r.sqlite"
    v3_store(db)
    ReportStore(db, gateway_id="gw1").close()
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)  # this gateway is now a release of version 3
    with pytest.raises(StorageError) as info:
        ReportStore(db, gateway_id="gw1")
    assert info.value.reason == "schema_too_new"
    assert ("to go back to this release, stop, put %s.schema-v3.bak in its place (the store as it was before the "
            "migration: what came after is only in the newer store) and remove its -wal and -shm" % db
            in str(info.value))
