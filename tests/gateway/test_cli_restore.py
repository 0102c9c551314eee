"""``civicedge gateway restore BACKUP_DIR``: a checked, reversible restore of a real ``gateway backup``."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import KEYS, make_env

from gateway.cli import restore_swap
from gateway.registry import Registry
from gateway.storage import ReportRecord, ReportStore
from hil.cli.main import main

TOKEN = "t0ken-6aeb7ea520de1d77ce7ed49b5d4f31e99fd37a29"
RETENTION = '{"overrides": []}\n'
PORT = 18401  # `run --check` binds the HTTP port: each test that runs it has its own (18401..)


def record(seq: int) -> ReportRecord:
    return ReportRecord(device="bin-1", seq=seq, kind="bin", zone="north", type="win", w=1_700_000_000 + 900 * seq,
                        l=900, m={"fill": seq % 100}, e={}, a=[], fw="1.0", received_at=1_700_000_000.0 + seq,
                        link="serial:x", digest="%064x" % seq)


def gateway_dir(tmp_path: Path, reports: int = 20, port: int = PORT) -> Path:
    """A stopped gateway with registry, keys, a store with ``reports`` reports, admin token and retention.json."""
    make_env(tmp_path)
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    (tmp_path / "data" / "retention.json").write_text(RETENTION)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw-test"\ndata_dir = "data"\n[http]\nport = %d\nlisten = "127.0.0.1"\n'
                   'admin_token_file = "admin.token"\n' % port)
    store = ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test")
    if reports:
        store.insert_batch([record(s) for s in range(1, reports + 1)])
    store.close()
    return cfg


def backed_up(tmp_path: Path, reports: int = 20, port: int = PORT) -> tuple[Path, Path]:
    """(config, backup dir): a gateway and a real `civicedge gateway backup` of it."""
    cfg = gateway_dir(tmp_path, reports, port)
    assert main(["gateway", "backup", str(tmp_path / "bk"), "--config", str(cfg)]) == 0
    return cfg, tmp_path / "bk"


def seqs(db: Path) -> list[int]:
    conn = sqlite3.connect(db.as_uri() + "?mode=ro&immutable=1", uri=True)
    try:
        return [int(r[0]) for r in conn.execute("SELECT seq FROM reports ORDER BY id")]
    finally:
        conn.close()


def add_reports(data: Path, first: int, last: int) -> None:
    store = ReportStore(data / "reports.sqlite", gateway_id="gw-test")
    store.insert_batch([record(s) for s in range(first, last + 1)])
    store.close()


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (the backup excluded) with its SHA-256: "nothing changed" is compared on this."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "bk" not in p.relative_to(root).parts and p.name != "reports.sqlite.lock":
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_a_restore_puts_the_backup_back_moves_the_old_files_aside_and_run_check_passes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = backed_up(tmp_path)
    data = tmp_path / "data"
    add_reports(data, 21, 30)  # acknowledged after the backup: lost by the restore
    (data / "retention.json").write_text('{"overrides": [{"kind": "bin"}]}\n')
    old_store = hashlib.sha256((data / "reports.sqlite").read_bytes()).hexdigest()
    capsys.readouterr()

    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    manifest = json.loads((bk / "MANIFEST.json").read_text())
    assert "restored backup %s (made %s" % (bk, manifest["created_at"]) in out
    assert "20 report(s), newest received 2023-11-14T22:13:40Z" in out
    assert "reports acknowledged after %s are lost" % manifest["created_at"] in out
    assert "/opendata/privacy-budget.csv go back to the backup's state" in out and "fork" in out
    assert "next: civicedge gateway run --config %s --check" % cfg in out
    assert TOKEN not in out and all(k.hex() not in out for k in KEYS.values())

    assert seqs(data / "reports.sqlite") == list(range(1, 21))
    aside = [p for p in data.iterdir() if p.name.startswith("replaced-")]
    assert len(aside) == 1 and "moved (not deleted) to %s" % aside[0] in out
    assert hashlib.sha256((aside[0] / "reports.sqlite").read_bytes()).hexdigest() == old_store
    assert seqs(aside[0] / "reports.sqlite") == list(range(1, 31))
    assert (aside[0] / "retention.json").read_text() == '{"overrides": [{"kind": "bin"}]}\n'
    assert {p.name for p in (aside[0] / "registry" / "keys").iterdir()} == {"%s.key" % d for d in KEYS}
    assert (data / "retention.json").read_text() == RETENTION
    assert (tmp_path / "admin.token").read_text() == TOKEN + "\n"
    # Owner-only, and no temporary file left beside anything.
    for p in [data / "reports.sqlite", data / "retention.json", data / "registry" / "devices.sqlite",
              *(data / "registry" / "keys").iterdir()]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE((data / "registry" / "keys").stat().st_mode) == 0o700
    assert not [p for p in data.rglob(".*restore*")]
    reg = Registry(data / "registry", create=False)
    try:
        assert {r.id for r in reg.list()} == set(KEYS) and all(reg.key(d) == k for d, k in KEYS.items())
    finally:
        reg.close()
    conn = sqlite3.connect((data / "reports.sqlite").as_uri() + "?mode=ro", uri=True)
    try:
        recorded = json.loads(conn.execute("SELECT value FROM meta WHERE key='restored_from'").fetchone()[0])
    finally:
        conn.close()
    assert recorded["backup_created_at"] == manifest["created_at"]
    assert recorded["manifest_sha256"] == hashlib.sha256((bk / "MANIFEST.json").read_bytes()).hexdigest()

    assert main(["gateway", "run", "--config", str(cfg), "--check"]) == 0, capsys.readouterr()
    # The restored store takes reports again from the backup's state on.
    add_reports(data, 21, 22)
    assert seqs(data / "reports.sqlite") == list(range(1, 23))


def test_a_running_gateway_is_refused_and_nothing_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = backed_up(tmp_path)
    store = ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test")  # holds the lock, as `run` does
    try:
        before = snapshot(tmp_path)
        capsys.readouterr()
        assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error (in_use): report store %s is in use by the running gateway (pid %d)"
                              % (tmp_path / "data" / "reports.sqlite", os.getpid())), err
        assert "nothing was changed" in err
        assert snapshot(tmp_path) == before
        assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(("replaced-", "."))]
    finally:
        store.close()


def test_a_gateway_process_holding_the_store_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The lock held by another process (a gateway's pid is named), not only by this one."""
    cfg, bk = backed_up(tmp_path, reports=2)
    db = tmp_path / "data" / "reports.sqlite"
    code = ("import sys, time; sys.path[:0] = %r; from pathlib import Path; from gateway.storage import ReportStore; "
            "s = ReportStore(Path(%r), gateway_id='gw-test'); print('open', flush=True); sys.stdin.read()"
            % ([str(Path(__file__).parents[2])], str(db)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "open\n"
        capsys.readouterr()
        assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
        assert "in use by the running gateway (pid %d)" % proc.pid in capsys.readouterr().err
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


@pytest.mark.parametrize("name", ["reports.sqlite", "devices.sqlite", "keys/bin-2.key", "retention.json"])
def test_an_altered_file_is_refused_naming_it_and_nothing_changes(tmp_path: Path, name: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = backed_up(tmp_path)
    raw = bytearray((bk / name).read_bytes())
    raw[len(raw) // 2] ^= 1
    (bk / name).write_bytes(bytes(raw))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error (checksum_mismatch): %s does not match MANIFEST.json" % (bk / name)), err
    assert "nothing was restored" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_a_backup_without_manifest_or_with_unlisted_store_files_is_refused(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = backed_up(tmp_path)
    before = snapshot(tmp_path)
    (bk / "reports.sqlite-wal").write_bytes(b"x" * 100)  # as opening the copy with sqlite3 may leave
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error (bad_backup): %s holds reports.sqlite-wal, not listed in MANIFEST.json" % bk), err
    os.unlink(bk / "reports.sqlite-wal")
    (bk / "keys" / "bin-1.key").unlink()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
    assert capsys.readouterr().err.startswith(
        "error (bad_backup): %s is listed in MANIFEST.json but missing from the backup" % (bk / "keys" / "bin-1.key"))
    (bk / "MANIFEST.json").write_text("{not json")
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
    assert capsys.readouterr().err.startswith("error (bad_backup): %s is not valid JSON" % (bk / "MANIFEST.json"))
    (bk / "MANIFEST.json").unlink()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
    assert capsys.readouterr().err.startswith("error (bad_backup): %s has no MANIFEST.json" % bk)
    assert snapshot(tmp_path) == before


def test_a_stale_wal_and_shm_are_moved_aside_not_replayed_into_the_restored_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A gateway killed after the backup leaves commits only in its -wal: they must not reach the restored file."""
    cfg, bk = backed_up(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    code = ("import os, sys; sys.path[:0] = %r; from pathlib import Path; from test_cli_restore import record; "
            "from gateway.storage import ReportStore; s = ReportStore(Path(%r), gateway_id='gw-test'); "
            "s.insert_batch([record(i) for i in range(21, 71)]); os._exit(0)"
            % ([str(Path(__file__).parent), str(Path(__file__).parents[2])], str(db)))
    subprocess.run([sys.executable, "-c", code], check=True)
    wal = db.with_name("reports.sqlite-wal").read_bytes()
    assert wal and db.with_name("reports.sqlite-shm").exists()
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    aside = next(p for p in db.parent.iterdir() if p.name.startswith("replaced-"))
    assert (aside / "reports.sqlite-wal").read_bytes() == wal and (aside / "reports.sqlite-shm").exists()
    assert "  %s-wal\n" % db in out
    assert not db.with_name("reports.sqlite-wal").exists() or db.with_name("reports.sqlite-wal").stat().st_size == 0
    # Opened as the gateway opens it: only the backup's reports, and an intact file.
    store = ReportStore(db, gateway_id="gw-test")
    store.close()
    assert seqs(db) == list(range(1, 21))
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_registry_changes_made_since_the_backup_are_carried_over(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = backed_up(tmp_path, port=PORT + 1)
    reg_dir = tmp_path / "data" / "registry"
    new_key, added_key = bytes(range(100, 132)), bytes(range(200, 232))
    reg = Registry(reg_dir, create=False)
    try:
        reg.revoke("bin-1")
        reg.rotate_key("bin-2", key=new_key)
        reg.move("sl-1", lat="52.38", lon="4.90", zone="south")
        reg.add("bin-9", kind="bin", zone="east", lat="52.36", lon="4.88", key=added_key)
        reg.retire("bin-9")
    finally:
        reg.close()
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "device bin-1: revoked since the backup: kept revoked" in out
    assert "device bin-2: key rotated since the backup: kept the current key (the board holds it)" in out
    assert "device sl-1: moved since the backup: kept zone south at 52.38,4.90" in out
    assert "device bin-9: added since the backup: kept, with its current key (retired)" in out
    assert new_key.hex() not in out and added_key.hex() not in out

    reg = Registry(reg_dir, create=False)
    try:
        assert reg.get("bin-1").revoked  # its frames stay refused
        assert reg.key("bin-2") == new_key  # the board's key, not the backup's
        sl = reg.get("sl-1")
        assert (sl.zone, sl.lat, sl.lon) == ("south", "52.38", "4.90")
        assert reg.get("bin-9").retired and reg.key("bin-9") == added_key
        assert reg.key("sl-1") == KEYS["sl-1"]
    finally:
        reg.close()
    assert {stat.S_IMODE(p.stat().st_mode) for p in (reg_dir / "keys").iterdir()} == {0o600}
    assert main(["gateway", "run", "--config", str(cfg), "--check"]) == 0


def test_without_a_current_registry_the_backups_is_restored_with_a_warning(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A lost data directory (a new SD card): everything comes from the backup, and the operator is told what
    cannot be checked."""
    cfg, bk = backed_up(tmp_path, port=PORT + 2)
    aside = tmp_path / "lost"
    os.rename(tmp_path / "data", aside)
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "warning: no current registry at %s" % (tmp_path / "data" / "registry") in out
    assert "revoked or keys rotated since the backup cannot be checked" in out
    assert "there were no current files to move aside" in out
    assert seqs(tmp_path / "data" / "reports.sqlite") == list(range(1, 21))
    assert main(["gateway", "run", "--config", str(cfg), "--check"]) == 0


def test_a_failure_after_moving_files_aside_rolls_everything_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = backed_up(tmp_path)
    add_reports(tmp_path / "data", 21, 25)
    before = snapshot(tmp_path)
    real_exchange = restore_swap.exchange

    def full_disk_at_keys(src: Path, dst: Path) -> bool:
        if dst == tmp_path / "data" / "registry" / "keys":
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))  # the disk filled up mid-way
        return real_exchange(src, dst)

    monkeypatch.setattr(restore_swap, "exchange", full_disk_at_keys)
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error (disk_full): restore failed: %s" % (tmp_path / "data" / "registry" / "keys")), err
    assert "rolled back: every moved file is back in its place" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before
    assert seqs(tmp_path / "data" / "reports.sqlite") == list(range(1, 26))
    assert not [p for p in (tmp_path / "data").rglob("*") if p.name.startswith(("replaced-", ".")) and
                p.name != ".gitkeep"]


def test_help_leads_with_what_it_checks_and_what_it_means(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["gateway", "restore", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for words in ("BACKUP_DIR", "--config", "MANIFEST.json", "SHA-256", "reports.sqlite.lock", "revoked since",
                  "replaced-<UTC time>", "nothing is deleted", "privacy-budget.csv", "fork", "run --config",
                  "Restoring a backup"):
        assert words in out, words
