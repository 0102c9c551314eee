"""``civicedge gateway backup DEST``: a complete, private, checked copy of a gateway, running or not."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import KEYS, make_env

from gateway.cli import backup_cmd
from gateway.registry import Registry
from gateway.storage import ReportRecord, ReportStore
from gateway.storage.provenance import export_chain_summary, verify_export_summary
from hil.cli.main import main

TOKEN = "t0ken-a1fe2ac6ee072f1a29a9067d6596279288855bf3"
RETENTION = '{"overrides": []}\n'


def record(seq: int) -> ReportRecord:
    return ReportRecord(device="bin-1", seq=seq, kind="bin", zone="north", type="win", w=1_700_000_000 + 900 * seq,
                        l=900, m={"fill": seq % 100}, e={}, a=[], fw="1.0", received_at=1_700_000_000.0 + seq,
                        link="serial:x", digest="%064x" % seq)


def gateway_dir(tmp_path: Path, reports: int = 20) -> Path:
    """A gateway as `devices add` and `run` leave it: registry with keys, a store with reports, admin token,
    retention.json; the config (HTTP on, with the token) is returned."""
    make_env(tmp_path)  # registers the KEYS devices in tmp_path/data/registry
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    (tmp_path / "data" / "retention.json").write_text(RETENTION)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw-test"\ndata_dir = "data"\n[http]\nport = 18801\n'
                   'admin_token_file = "admin.token"\n')
    store = ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test")
    if reports:
        store.insert_batch([record(s) for s in range(1, reports + 1)])
    store.close()
    return cfg


def reports_of(db: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db.as_uri() + "?mode=ro&immutable=1", uri=True)
    try:
        return conn.execute("SELECT device, seq, m, digest FROM reports ORDER BY id").fetchall()
    finally:
        conn.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_backup_holds_everything_private_checked_and_listed(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = gateway_dir(tmp_path)
    dest = tmp_path / "backups" / "b1"
    assert main(["gateway", "backup", str(dest), "--config", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("backup written to %s\n" % dest)
    assert "report store, schema 4, integrity_check ok" in out and "device registry, integrity_check ok" in out
    assert "3 device key file(s)" in out
    for secret in [TOKEN, *(k.hex() for k in KEYS.values())]:
        assert secret not in out

    found = {str(p.relative_to(dest)) for p in dest.rglob("*")}  # before the reads below add a -shm
    data = tmp_path / "data"
    assert reports_of(dest / "reports.sqlite") == reports_of(data / "reports.sqlite")
    assert len(reports_of(dest / "reports.sqlite")) == 20
    # The copy's provenance chain verifies as the source's does.
    export = io.StringIO()
    summary = export_chain_summary(dest / "reports.sqlite", export)
    assert summary.count == 20 and verify_export_summary(export.getvalue().splitlines()) == summary
    copied_registry = Registry(dest, create=False)  # devices.sqlite + keys/ side by side, as in a registry
    try:
        assert {r.id for r in copied_registry.list()} == set(KEYS)
        assert all(copied_registry.key(dev) == key for dev, key in KEYS.items())
    finally:
        copied_registry.close()
    assert (dest / "admin.token").read_text() == TOKEN + "\n"
    assert (dest / "retention.json").read_text() == RETENTION
    assert (dest / "gateway.toml").read_bytes() == cfg.read_bytes()

    manifest = json.loads((dest / "MANIFEST.json").read_text())
    assert manifest["store_schema_version"] == 4 and manifest["gateway_id"] == "gw-test"
    assert manifest["config"] == str(cfg) and manifest["gateway_running_pid"] is None
    assert manifest["civicedge_version"] and manifest["created_at"].endswith("Z")
    names = {f["name"] for f in manifest["files"]}
    assert names == {"reports.sqlite", "devices.sqlite", "admin.token", "retention.json", "gateway.toml",
                     *("keys/%s.key" % dev for dev in KEYS)}
    for entry in manifest["files"]:
        path = dest / entry["name"]
        assert entry["sha256"] == sha256(path) and entry["size"] == path.stat().st_size, entry["name"]
    assert {f["name"]: f["source"] for f in manifest["files"]}["reports.sqlite"] == str(data / "reports.sqlite")
    assert TOKEN not in (dest / "MANIFEST.json").read_text()

    # Everything owner-only, and only what the manifest lists (no -wal, -shm, journal, temp dir).
    assert found == names | {"keys", "MANIFEST.json"}
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700 and stat.S_IMODE((dest / "keys").stat().st_mode) == 0o700
    assert {stat.S_IMODE((dest / n).stat().st_mode) for n in names | {"MANIFEST.json"}} == {0o600}
    assert sorted(os.listdir(dest.parent)) == ["b1"]
    # Nothing was left beside the stopped gateway's store (a read-only look creates a -shm and -wal).
    assert not (data / "reports.sqlite-wal").exists() and not (data / "reports.sqlite-shm").exists()


def test_a_backup_under_umask_0_is_still_private(tmp_path: Path) -> None:
    cfg = gateway_dir(tmp_path, reports=1)
    old = os.umask(0)
    try:
        assert main(["gateway", "backup", str(tmp_path / "b"), "--config", str(cfg)]) == 0
    finally:
        os.umask(old)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert modes == {0o600}


def test_a_backup_while_a_writer_commits_is_a_consistent_snapshot(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = gateway_dir(tmp_path, reports=0)
    store = ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test")
    store.insert_batch([record(s) for s in range(1, 3001)])
    monkeypatch.setattr(backup_cmd, "STEP_PAGES", 4)  # many steps: the writer commits between them
    stop, seq = threading.Event(), [3000]

    def write() -> None:
        while not stop.is_set():
            seq[0] += 1
            store.insert_batch([record(seq[0])])

    writer = threading.Thread(target=write)
    writer.start()
    try:
        config = backup_cmd.config_from(backup_cmd.argparse.Namespace(config=cfg), read_only=True)
        result = backup_cmd.make_backup(config, tmp_path / "b", progress_bytes=0)  # with the progress bar
    finally:
        stop.set()
        writer.join()
    written = seq[0]
    assert written > 3000  # the writer committed while the copy ran
    assert result.running is not None and result.manifest["gateway_running_pid"] == result.running
    copied = reports_of(tmp_path / "b" / "reports.sqlite")
    assert 3000 <= len(copied) <= written
    assert [r[1] for r in copied] == list(range(1, len(copied) + 1))  # a prefix of what was committed
    export = io.StringIO()
    assert export_chain_summary(tmp_path / "b" / "reports.sqlite", export).count == len(copied)
    verify_export_summary(export.getvalue().splitlines())
    store.insert_batch([record(written + 1)])  # the writer was never disturbed
    store.close()
    assert len(reports_of(tmp_path / "data" / "reports.sqlite")) == written + 1
    assert "(gateway running, pid" in backup_cmd.summary(result)


def test_an_existing_non_empty_dest_is_refused_and_left_as_it_was(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = gateway_dir(tmp_path, reports=1)
    dest = tmp_path / "b"
    dest.mkdir()
    (dest / "old.txt").write_text("keep me")
    assert main(["gateway", "backup", str(dest), "--config", str(cfg)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("error (exists): %s exists and is not empty; give a new directory for each backup (a backup is "
                   "never written over another)\n" % dest)
    assert os.listdir(dest) == ["old.txt"] and (dest / "old.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["admin.token", "b", "data", "gateway.toml"]
    (dest / "old.txt").unlink()  # an empty directory is taken
    assert main(["gateway", "backup", str(dest), "--config", str(cfg)]) == 0
    assert (dest / "MANIFEST.json").is_file() and stat.S_IMODE(dest.stat().st_mode) == 0o700


def test_a_missing_store_is_an_error_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = gateway_dir(tmp_path, reports=1)
    (tmp_path / "data" / "reports.sqlite").unlink()
    assert main(["gateway", "backup", str(tmp_path / "b"), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err == ("error (no_store): no report store at %s: nothing to back up (is --config the gateway's "
                   "config?)\n" % (tmp_path / "data" / "reports.sqlite"))
    assert not (tmp_path / "b").exists()


def test_a_missing_config_is_the_usual_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gateway", "backup", str(tmp_path / "b"), "--config", str(tmp_path / "nope.toml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error (") and str(tmp_path / "nope.toml") in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()


def test_a_failure_midway_leaves_no_half_backup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The databases are copied, then retention.json cannot be read: no DEST, no partial directory."""
    cfg = gateway_dir(tmp_path, reports=1)
    retention = tmp_path / "data" / "retention.json"
    retention.unlink()
    retention.mkdir()
    assert main(["gateway", "backup", str(tmp_path / "bk" / "b"), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error (write_failed): cannot read %s: Is a directory" % retention), err
    assert os.listdir(tmp_path / "bk") == []


def test_help_says_what_is_and_is_not_in_the_backup_and_how_to_restore(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["gateway", "backup", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for words in ("reports.sqlite", "devices.sqlite", "keys/", "retention.json", "admin_token_file",
                  "password_file", "MANIFEST.json", "0600", "Not in the backup", "-wal", "Restoring a backup",
                  "run --check", "--config", "integrity_check", "in_use", "gateway restore DEST"):
        assert words in out, words


def test_a_killed_gateways_store_is_copied_with_its_wal_and_left_as_it_was(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Commits only in the -wal (killed before a checkpoint): the copy holds them; nothing is changed beside it."""
    cfg = gateway_dir(tmp_path, reports=0)
    db = tmp_path / "data" / "reports.sqlite"
    code = ("import os, sys; sys.path[:0] = %r; from pathlib import Path; from test_cli_backup import record; "
            "from gateway.storage import ReportStore; s = ReportStore(Path(%r), gateway_id='gw-test'); "
            "s.insert_batch([record(i) for i in range(1, 51)]); os._exit(0)"
            % ([str(Path(__file__).parent), str(Path(__file__).parents[2])], str(db)))
    subprocess.run([sys.executable, "-c", code], check=True)
    wal = db.with_name("reports.sqlite-wal").read_bytes()
    assert wal  # the reports are in there only
    os.unlink(db.with_name("reports.sqlite-shm"))  # as after a reboot: no WAL index
    before = sha256(db)
    assert main(["gateway", "backup", str(tmp_path / "b"), "--config", str(cfg)]) == 0
    assert [r[1] for r in reports_of(tmp_path / "b" / "reports.sqlite")] == list(range(1, 51))
    assert db.with_name("reports.sqlite-wal").read_bytes() == wal and sha256(db) == before
    assert not db.with_name("reports.sqlite-shm").exists()


def test_the_mqtt_password_file_is_kept_under_its_own_name_and_odd_key_entries_are_listed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = gateway_dir(tmp_path, reports=1)
    (tmp_path / "mqtt").mkdir()
    password = tmp_path / "mqtt" / "admin.token"  # the same name as the admin token: both are kept
    password.write_text("mqtt-secret-password\n")
    password.chmod(0o600)
    cfg.write_text(cfg.read_text() + '[mqtt]\nhost = "127.0.0.1"\nport = 18802\nusername = "gw"\n'
                   'password_file = "mqtt/admin.token"\n')
    keys = tmp_path / "data" / "registry" / "keys"
    (keys / "stray.key").symlink_to(keys / "bin-1.key")
    assert main(["gateway", "backup", str(tmp_path / "b"), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "mqtt-secret-password" not in out and TOKEN not in out
    assert "not copied: %s (not a regular file)" % (keys / "stray.key") in out
    assert (tmp_path / "b" / "admin.token").read_text() == TOKEN + "\n"
    copied = tmp_path / "b" / "MQTT-password-admin.token"
    assert copied.read_text() == "mqtt-secret-password\n" and stat.S_IMODE(copied.stat().st_mode) == 0o600
    manifest = json.loads((tmp_path / "b" / "MANIFEST.json").read_text())
    assert {f["name"]: f["source"] for f in manifest["files"]}["MQTT-password-admin.token"] == str(password)
    assert manifest["not_copied"] == [{"source": str(keys / "stray.key"), "why": "not a regular file"}]
    assert not (tmp_path / "b" / "keys" / "stray.key").exists()


def test_a_gateway_start_during_the_copy_of_a_stopped_store_waits_and_the_copy_is_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test fails before: a stopped store was read immutable without its lock, so a gateway could start,
    commit and stop during the copy, which then mixed pages of both states (review rev-mb M1)."""
    from gateway.errors import StorageError

    cfg = gateway_dir(tmp_path, reports=0)
    db = tmp_path / "data" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    store.insert_batch([record(i) for i in range(1, 3001)])
    store.close()
    refused: list[str] = []

    def bar(src: sqlite3.Connection, dst: sqlite3.Connection, source: Path) -> None:
        def progress(status: int, remaining: int, total: int) -> None:
            if not refused and total - remaining > 20:  # part-way: a gateway starts, commits, stops
                try:
                    g = ReportStore(db, gateway_id="gw-test")
                except StorageError as exc:
                    refused.append(exc.reason)
                    return
                g.insert_batch([record(i) for i in range(3001, 6001)])
                g.close()
                refused.append("started")
        src.backup(dst, pages=4, progress=progress)

    monkeypatch.setattr(backup_cmd, "_backup_with_bar", bar)
    config = backup_cmd.config_from(backup_cmd.argparse.Namespace(config=cfg), read_only=True)
    result = backup_cmd.make_backup(config, tmp_path / "b", progress_bytes=0)
    assert refused == ["in_use"]
    assert result.files[0].note == "schema 4, integrity_check ok"
    copy = tmp_path / "b" / "reports.sqlite"
    assert [r[1] for r in reports_of(copy)] == list(range(1, 3001))
    out = io.StringIO()
    export_chain_summary(copy, out)
    verify_export_summary(out.getvalue().splitlines())
    # The lock is released: a gateway starts once the backup is done.
    ReportStore(db, gateway_id="gw-test").close()


def test_a_registry_with_an_unfinished_write_says_so_and_what_rolls_it_back(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Test fails before: 'permission_denied ... run the backup as the gateway's user', as the gateway's user
    (review rev-mb L1)."""
    cfg = gateway_dir(tmp_path)
    registry = tmp_path / "data" / "registry" / "devices.sqlite"
    # Killed mid-write: a transaction larger than the page cache has written pages, its journal is hot.
    code = ("import os, sqlite3; c = sqlite3.connect(%r, isolation_level=None); c.execute('PRAGMA cache_size=10');"
            "c.execute('BEGIN'); c.execute('UPDATE devices SET zone = zone'); c.execute('CREATE TABLE pad (x)');"
            "c.execute('WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) "
            "INSERT INTO pad SELECT randomblob(3000) FROM n'); os._exit(0)" % str(registry))
    subprocess.run([sys.executable, "-c", code], check=True)
    assert registry.with_name("devices.sqlite-journal").stat().st_size > 0  # hot: its writer is gone
    assert main(["gateway", "backup", str(tmp_path / "b"), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error (unfinished_write): %s has an unfinished write (its devices.sqlite-journal" % registry)
    assert "start the gateway (its open rolls it back, nothing committed is lost)" in err
    assert not (tmp_path / "b").exists()
    Registry(tmp_path / "data" / "registry").close()  # what a gateway start does: rolled back
    assert main(["gateway", "backup", str(tmp_path / "b"), "--config", str(cfg)]) == 0


def test_an_empty_mount_point_as_dest_is_filled_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test fails before: the temporary directory was made beside DEST, on the parent's file system, and the
    rename onto the mount point failed with EBUSY naming it (review rev-mb L2; checked by hand on a tmpfs
    mounted at DEST). A test cannot mount: DEST is taken for a mount point here."""
    cfg = gateway_dir(tmp_path)
    mnt = tmp_path / "usb"
    mnt.mkdir()
    monkeypatch.setattr(backup_cmd, "_is_mount", lambda dest: dest == mnt)
    seen: list[list[str]] = []
    real_move = backup_cmd._move_up

    def move_up(tmp: Path, dest: Path, moved: list[Path]) -> None:
        seen.append([str(tmp.relative_to(tmp_path)), *sorted(os.listdir(tmp_path))])
        real_move(tmp, dest, moved)

    monkeypatch.setattr(backup_cmd, "_move_up", move_up)
    result = backup_cmd.make_backup(backup_cmd.config_from(backup_cmd.argparse.Namespace(config=cfg), read_only=True),
                                    mnt)
    assert seen[0][0].startswith("usb/.partial-")  # written inside DEST, nothing beside it
    assert not [n for n in seen[0][1:] if "partial" in n]
    assert sorted(os.listdir(mnt)) == sorted(["MANIFEST.json", "admin.token", "devices.sqlite", "gateway.toml", "keys",
                                              "reports.sqlite", "retention.json"])
    assert result.dest == mnt and reports_of(mnt / "reports.sqlite") == reports_of(tmp_path / "data" / "reports.sqlite")

    # A failure part-way leaves the mount point empty again.
    empty = tmp_path / "usb2"
    empty.mkdir()
    monkeypatch.setattr(backup_cmd, "_is_mount", lambda dest: dest == empty)
    retention = tmp_path / "data" / "retention.json"
    retention.unlink()
    retention.mkdir()
    with pytest.raises(backup_cmd.BackupError):
        backup_cmd.make_backup(backup_cmd.config_from(backup_cmd.argparse.Namespace(config=cfg), read_only=True), empty)
    assert os.listdir(empty) == []


def test_without_a_lock_file_a_copy_during_which_the_store_changed_is_made_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the lock file cannot be made (read-only media; taken for one here: a test runs as root), a gateway
    that started, committed and stopped during the copy changed the files: the copy is made again, whole."""
    cfg = gateway_dir(tmp_path, reports=0)
    db = tmp_path / "data" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    store.insert_batch([record(i) for i in range(1, 3001)])
    store.close()

    def no_lock_file(path: Path, *, mode: int) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(backup_cmd, "take_pid_lock", no_lock_file)
    copies: list[int] = []

    def bar(src: sqlite3.Connection, dst: sqlite3.Connection, source: Path) -> None:
        copies.append(0)

        def progress(status: int, remaining: int, total: int) -> None:
            if len(copies) == 1 and copies[0] == 0 and total - remaining > 20:
                copies[0] = 1
                g = ReportStore(db, gateway_id="gw-test")  # a gateway starts, commits, stops
                g.insert_batch([record(i) for i in range(3001, 6001)])
                g.close()
        src.backup(dst, pages=4, progress=progress)

    monkeypatch.setattr(backup_cmd, "_backup_with_bar", bar)
    config = backup_cmd.config_from(backup_cmd.argparse.Namespace(config=cfg), read_only=True)
    result = backup_cmd.make_backup(config, tmp_path / "b", progress_bytes=0)
    assert len(copies) == 2 and result.running is None
    assert result.files[0].note == "schema 4, integrity_check ok"
    assert [r[1] for r in reports_of(tmp_path / "b" / "reports.sqlite")] == list(range(1, 6001))
