"""``gateway restore`` review fixes: an older registry never wins over a newer backup (H1), the swap never leaves
a place empty and rolls back on signals (M2), the target, the schema and the gateway id are checked first (M4),
files made as root belong to the data directory's owner (M3), a registry change during the restore is not lost
(M1). Real backups (``gateway backup``), real registries, real signals."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import KEYS
from test_cli_restore import add_reports, backed_up, seqs, snapshot

from gateway.cli import restore_cmd, restore_swap
from gateway.registry import Registry
from hil.cli.main import main

PORT = 18700  # this file's `run --check` ports: 18700..18709
CIVICEDGE = [sys.executable, "-m", "hil.cli.main"]


def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "data" / "registry", create=False)


def test_restoring_an_older_backup_then_a_newer_one_keeps_the_newer_ones_registry(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A new host: bk1 (older) restored first, then bk2 (newer). bk2's changes must not be reversed by carrying
    over bk1's older state as if it were newer."""
    cfg, bk1 = backed_up(tmp_path, port=PORT)
    new_key = bytes(range(100, 132))
    time.sleep(0.01)
    reg = registry(tmp_path)
    try:
        reg.rotate_key("bin-2", key=new_key)
        reg.move("sl-1", lat="52.38", lon="4.90", zone="south")
        reg.retire("bin-1")
    finally:
        reg.close()
    assert main(["gateway", "backup", str(tmp_path / "bk2"), "--config", str(cfg)]) == 0
    os.rename(tmp_path / "data", tmp_path / "old-host")  # the old host is gone
    assert main(["gateway", "restore", str(bk1), "--config", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["gateway", "restore", str(tmp_path / "bk2"), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    reg = registry(tmp_path)
    try:
        assert reg.key("bin-2") == new_key  # the board's key: the older one would fail HMAC
        sl = reg.get("sl-1")
        assert (sl.zone, sl.lat, sl.lon) == ("south", "52.38", "4.90")
        assert reg.get("bin-1").retired  # not reinstated by the older registry
    finally:
        reg.close()
    assert "key rotated since the backup" not in out and "reinstated since" not in out and "moved since" not in out
    for dev in ("bin-2", "sl-1", "bin-1"):
        assert "warning: device %s:" % dev in out and "looks older than the backup for this device" in out, out
    assert main(["gateway", "run", "--config", str(cfg), "--check"]) == 0


def test_a_newer_live_change_is_still_carried_over(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = backed_up(tmp_path, port=PORT + 1)
    time.sleep(0.01)
    reg = registry(tmp_path)
    try:
        reg.retire("bin-1")
        reg.reinstate("bin-1")
        reg.retire("bin-2")
    finally:
        reg.close()
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "device bin-2: retired since the backup: kept retired" in out
    assert "bin-1" not in out.split("registry changes")[-1].split("what this means")[0]  # retired and back: no change
    reg = registry(tmp_path)
    try:
        assert reg.get("bin-2").retired and not reg.get("bin-1").retired
    finally:
        reg.close()


def _signal_at_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, signum: int, seen: dict[str, bool]) -> None:
    """Send ``signum`` to this process while the swap exchanges keys/ (after the store and registry were put in
    place), recording what the places held at that moment."""
    real = restore_swap.exchange
    data = tmp_path / "data"

    def exchange(a: Path, b: Path) -> bool:
        if seen:  # the rollback exchanging back
            return real(a, b)
        seen["store"] = (data / "reports.sqlite").is_file()
        seen["registry"] = (data / "registry" / "devices.sqlite").is_file()
        seen["marker"] = (data / restore_swap.MARKER).is_file()
        os.kill(os.getpid(), signum)
        return real(a, b)

    monkeypatch.setattr(restore_swap, "exchange", exchange)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["INT", "TERM", "HUP"])
def test_a_signal_during_the_swap_rolls_back_and_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str], signum: int) -> None:
    cfg, bk = backed_up(tmp_path, port=PORT + 2)
    add_reports(tmp_path / "data", 21, 25)
    before = snapshot(tmp_path)
    seen: dict[str, bool] = {}
    _signal_at_keys(monkeypatch, tmp_path, signum, seen)
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 130
    err = capsys.readouterr().err
    assert seen == {"store": True, "registry": True, "marker": True}  # no place empty, the marker says so
    assert "error (interrupted): restore interrupted (%s) during the swap; rolled back" % signal.Signals(signum).name \
        in err, err
    assert snapshot(tmp_path) == before
    assert seqs(tmp_path / "data" / "reports.sqlite") == list(range(1, 26))
    assert not (tmp_path / "data" / restore_swap.MARKER).exists()
    assert not [p for p in (tmp_path / "data").rglob("*") if p.name.startswith(("replaced-", ".restore"))]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers put back


def test_the_target_is_named_first_and_a_newer_schema_is_refused(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = backed_up(tmp_path, port=PORT + 3)
    before = snapshot(tmp_path)
    manifest = json.loads((bk / "MANIFEST.json").read_text())
    manifest["store_schema_version"] = 99
    (bk / "MANIFEST.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
    cap = capsys.readouterr()
    assert cap.out.startswith("restoring into %s (config %s)\n" % (tmp_path / "data", cfg))
    assert "error (schema_too_new)" in cap.err and "schema version 99, this release reads up to 4" in cap.err
    # the copy's own record, with a manifest that matches it (a hand-made backup of a newer release's store)
    manifest["store_schema_version"] = 4
    conn = sqlite3.connect(bk / "reports.sqlite")
    with conn:
        conn.execute("UPDATE meta SET value='7' WHERE key='schema_version'")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    data = (bk / "reports.sqlite").read_bytes()
    entry = next(e for e in manifest["files"] if e["name"] == "reports.sqlite")
    entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (bk / "MANIFEST.json").write_text(json.dumps(manifest))
    for side in ("-wal", "-shm"):
        assert not (bk / ("reports.sqlite" + side)).exists()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
    assert "its store copy records schema version 7" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_another_gateways_backup_needs_other_gateway(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = backed_up(tmp_path, port=PORT + 4)
    cfg.write_text(cfg.read_text().replace('id = "gw-test"', 'id = "gw-other"'))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "error (other_gateway)" in err and "'gw-test'" in err and "--other-gateway" in err and "MQTT" in err
    assert snapshot(tmp_path) == before
    assert main(["gateway", "restore", str(bk), "--config", str(cfg), "--other-gateway"]) == 0


def test_no_config_and_no_default_data_dir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = backed_up(tmp_path, port=PORT + 5)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk)]) == 1
    err = capsys.readouterr().err
    assert "error (no_config)" in err and "--config" in err
    assert not (tmp_path / "xdg").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_as_root_into_a_fresh_data_dir_everything_belongs_to_its_owner(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = backed_up(tmp_path, port=PORT + 6)
    os.rename(tmp_path / "data", tmp_path / "old-host")
    nobody = pwd.getpwnam("nobody")
    os.mkdir(tmp_path / "data", 0o700)
    os.chown(tmp_path / "data", nobody.pw_uid, nobody.pw_gid)
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 0
    wrong = [(str(p), os.lstat(p).st_uid) for p in (tmp_path / "data").rglob("*")
             if (os.lstat(p).st_uid, os.lstat(p).st_gid) != (nobody.pw_uid, nobody.pw_gid)]
    assert wrong == []
    assert (tmp_path / "data" / "reports.sqlite.lock").exists() and (tmp_path / "data" / "registry" / "keys").is_dir()


def test_a_revoke_while_the_restore_reads_the_registry_is_carried_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Another operator's `devices revoke` (a real process) between reading the live registry and the swap."""
    cfg, bk = backed_up(tmp_path, port=PORT + 7)
    real = restore_cmd._stage_registry
    calls = []

    def stage(*args: object, **kwargs: object) -> tuple[list[str], list[str]]:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        calls.append(1)
        if len(calls) == 1:
            r = subprocess.run(CIVICEDGE + ["gateway", "devices", "revoke", "-c", str(cfg), "bin-1"],
                               capture_output=True, text=True, cwd=tmp_path)
            assert r.returncode == 0, r.stderr
        return out

    monkeypatch.setattr(restore_cmd, "_stage_registry", stage)
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert len(calls) == 2
    assert "the current registry changed while the restore read it" in out
    assert "device bin-1: revoked since the backup: kept revoked" in out
    reg = registry(tmp_path)
    try:
        assert reg.get("bin-1").revoked and reg.key("bin-2") == KEYS["bin-2"]
    finally:
        reg.close()


def test_a_registry_writer_is_kept_out_during_the_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A `devices revoke` started during the swap does not succeed on a registry about to be moved aside."""
    cfg, bk = backed_up(tmp_path, port=PORT + 8)
    real = restore_swap.swap
    results = []

    def swap(*args: object, **kwargs: object) -> restore_swap.Swap:
        proc = subprocess.Popen(CIVICEDGE + ["gateway", "devices", "revoke", "-c", str(cfg), "bin-2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        time.sleep(1.5)  # it is waiting for the registry's lock
        sw = real(*args, **kwargs)  # type: ignore[arg-type]
        results.append(proc)
        return sw

    monkeypatch.setattr(restore_swap, "swap", swap)
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 0
    out, err = results[0].communicate(timeout=30)
    reg = registry(tmp_path)
    try:
        revoked = reg.get("bin-2").revoked
    finally:
        reg.close()
    # Either it waited and revoked in the restored registry, or it failed loudly: never "revoked" and lost.
    assert revoked or results[0].returncode != 0, (out, err)


def test_a_key_listed_twice_or_a_keys_symlink_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = backed_up(tmp_path, port=PORT + 9)
    before = snapshot(tmp_path / "data")
    raw = (bk / "MANIFEST.json").read_text()
    manifest = json.loads(raw)
    manifest["files"].append(dict(next(e for e in manifest["files"] if e["name"] == "keys/bin-1.key")))
    (bk / "MANIFEST.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "error (bad_backup)" in err and "lists keys/bin-1.key twice" in err
    (bk / "MANIFEST.json").write_text(raw)
    os.rename(bk / "keys", tmp_path / "keys-elsewhere")
    os.symlink(tmp_path / "keys-elsewhere", bk / "keys")
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "error (bad_backup)" in err and "is a symlink: a backup holds copies only" in err
    assert snapshot(tmp_path / "data") == before


def test_the_summary_counts_the_keys_in_place_and_says_retention_may_hold(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = backed_up(tmp_path, port=PORT + 10)
    reg = registry(tmp_path)
    try:
        reg.add("bin-9", kind="bin", zone="east", lat="52.36", lon="4.88", key=bytes(range(200, 232)))
    finally:
        reg.close()
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "device registry and 4 device key file(s) in place (3 from the backup)" in out
    assert "registered and key version start again now" in out
    # the test reports were received in 2023: a gateway started on them may hold retention
    assert "the gateway may hold retention" in out
    assert "civicedge gateway retention --config %s --confirm" % cfg in out
