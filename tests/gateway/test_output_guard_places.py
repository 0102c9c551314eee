"""The output guard refuses the places of the gateway's directories, not only what is already there.

Before, ``export-log --db data/reports.sqlite -o data/registry`` with no registry directory yet succeeded and
left a FILE named ``registry`` where the config's [registry] path belongs: the gateway could then not make
its registry (``registry.path ... is not a directory``). The same for archive-log, for the data directory and
the directories above any protected file, and for ``backup DEST`` (an empty keys directory was replaced by
the backup; a directory made at the store's ``-wal`` or at ``retention.json``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gateway.cli.backup_cmd import BackupError, make_backup
from gateway.config import load_config
from gateway.output_guard import GatewayFiles, OutputRefused, check_output
from gateway.registry import Registry
from gateway.storage import ReportRecord, ReportStore
from hil.cli.main import main


def record(seq: int) -> ReportRecord:
    return ReportRecord(device="bin-1", seq=seq, kind="bin", zone="north", type="win", w=1_700_000_000 + 900 * seq,
                        l=900, m={"fill": seq}, e={}, a=[], fw="1.0", received_at=1_700_000_000.0 + seq,
                        link="serial:x", digest="%064x" % seq)


def store_at(db: Path, reports: int = 3) -> Path:
    db.parent.mkdir(parents=True, exist_ok=True)
    store = ReportStore(db, gateway_id="gw-test")
    store.insert_batch([record(s) for s in range(1, reports + 1)])
    store.close()
    return db


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory with a store and no registry yet (the gateway makes it at its first start); cwd."""
    store_at(tmp_path / "data" / "reports.sqlite")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default config's files: none of the user's
    return tmp_path


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 1, argv
    err = capsys.readouterr().err
    assert err.startswith("error (gateway_file): "), err
    return err


def test_export_to_the_registry_place_is_refused_before_it_exists(fresh: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The brief's case; fails before (exit 0, a file named registry, the registry could not be made)."""
    for extra in ((), ("--force",)):
        err = refused(capsys, ["gateway", "export-log", "--db", "data/reports.sqlite", "-o", "data/registry", *extra])
        assert err.startswith("error (gateway_file): data/registry is the device registry directory (anything else "
                              "in its place would keep the gateway from making or using it); export-log never "
                              "writes over the gateway's own files, not even with --force"), err
        assert not os.path.lexists(fresh / "data" / "registry")
    Registry(fresh / "data" / "registry").close()  # the gateway can still make it
    assert (fresh / "data" / "registry" / "devices.sqlite").is_file()


@pytest.mark.parametrize("spelling", ["registry", "./registry", "../data/registry", "{abs}/data/registry",
                                      "sub/../registry"])
def test_relative_and_absolute_spellings_are_the_same_place(fresh: Path, spelling: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The output resolved from the cwd, the protected path from --db: both sides the same way."""
    os.chdir(fresh / "data")
    (fresh / "data" / "sub").mkdir()
    out = spelling.format(abs=fresh)
    err = refused(capsys, ["gateway", "export-log", "--db", str(fresh / "data" / "reports.sqlite"), "-o", out])
    assert "is the device registry directory" in err
    assert not os.path.lexists(fresh / "data" / "registry")


def test_a_symlink_to_the_registry_place_is_refused(fresh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = fresh / "export.jsonl"
    link.symlink_to(fresh / "data" / "registry")  # dangling: the registry is not made yet
    refused(capsys, ["gateway", "export-log", "--db", "data/reports.sqlite", "-o", str(link), "--force"])
    assert link.is_symlink() and not os.path.lexists(fresh / "data" / "registry")
    # and the other way round: the store's directory reached through a symlink
    (fresh / "alias").symlink_to(fresh / "data")
    err = refused(capsys, ["gateway", "export-log", "--db", "alias/reports.sqlite", "-o", "data/registry"])
    assert "is the device registry directory" in err


def test_a_file_left_at_the_registry_place_is_not_replaced(fresh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What the old bug left: an export named registry. Not rewritten (not even as an earlier export)."""
    assert main(["gateway", "export-log", "--db", "data/reports.sqlite", "-o", "first.jsonl"]) == 0
    left = fresh / "data" / "registry"
    left.write_bytes((fresh / "first.jsonl").read_bytes())
    capsys.readouterr()
    err = refused(capsys, ["gateway", "export-log", "--db", "data/reports.sqlite", "-o", "data/registry"])
    assert "is the device registry directory" in err
    assert left.read_bytes() == (fresh / "first.jsonl").read_bytes()


def test_archive_log_to_the_registry_place_is_refused(fresh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fails before: the entries were archived into a file named registry."""
    err = refused(capsys, ["gateway", "archive-log", "--db", "data/reports.sqlite", "--keep", "1",
                           "-o", "data/registry"])
    assert "data/registry is the device registry directory" in err and "archive-log never writes" in err
    assert not os.path.lexists(fresh / "data" / "registry")
    assert main(["gateway", "export-log", "--db", "data/reports.sqlite", "-o", "all.jsonl"]) == 0
    assert "exported 3 entries, head" in capsys.readouterr().err  # nothing was archived


def test_the_config_places_are_refused_before_they_exist(fresh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config whose data directory and registry (elsewhere) are not made yet; the store is given by --db."""
    cfg = fresh / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw-test"\ndata_dir = "newdata"\n[registry]\npath = "state/gw/registry"\n'
                   '[http]\nenabled = false\n')
    base = ["gateway", "export-log", "-c", str(cfg), "--db", "data/reports.sqlite", "-o"]
    assert "newdata is the gateway's data directory" in refused(capsys, base + ["newdata"])
    assert "state/gw/registry is the device registry directory" in refused(capsys, base + ["state/gw/registry"])
    assert "state/gw/registry/keys is the device keys directory" in refused(capsys, base + ["state/gw/registry/keys"])
    for above in ("state", "state/gw"):
        err = refused(capsys, base + [above, "--force"])
        assert err.startswith("error (gateway_file): %s is the place of a directory that holds the device registry "
                              "directory (%s): anything else in its place would keep the gateway from making or "
                              "using it;" % (above, fresh / "state" / "gw" / "registry")), err
    assert sorted(p.name for p in fresh.iterdir()) == ["data", "gateway.toml"]
    # beside those places, an export is written as ever
    assert main(base + ["state.jsonl"]) == 0 and (fresh / "state.jsonl").stat().st_size > 0


def test_which_names_places_and_leaves_other_existing_directories_to_the_caller(tmp_path: Path) -> None:
    files = GatewayFiles()
    files.add_store(tmp_path / "a" / "b" / "reports.sqlite")
    files.add_registry(tmp_path / "a" / "b" / "registry")
    files.add_data_dir(tmp_path / "a" / "b")
    assert files.which(tmp_path / "a" / "b") == ("the gateway's data directory (anything else in its place would "
                                                 "keep the gateway from making or using it)")
    assert files.which(tmp_path / "a").startswith("the place of a directory that holds the report store")
    assert files.which(tmp_path / "elsewhere") is None
    assert files.which(tmp_path / "a" / "b" / "notes.txt") is None  # inside the data directory: a file of its own
    (tmp_path / "a" / "b" / "registry").mkdir(parents=True)
    assert files.which(tmp_path / "a" / "b" / "registry") == "the device registry directory"  # there: as itself
    assert files.which(tmp_path / "a") is None  # an existing directory above: "is a directory" is the caller's
    assert files.which(tmp_path) is None
    with pytest.raises(OutputRefused) as refusal:
        check_output(tmp_path / "a" / "b" / "registry" / "keys", files, force=True, previous=lambda _p: True,
                     command="routes plan", kind="a plan")
    assert refusal.value.reason == "gateway_file" and "is the device keys directory (anything else" in str(refusal.value)


def test_a_registry_place_reached_through_a_bind_mount_is_refused(fresh: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bind = fresh / "bind"
    bind.mkdir()
    if subprocess.run(["mount", "--bind", str(fresh / "data"), str(bind)], capture_output=True,
                      check=False).returncode:
        pytest.skip("bind mounts not permitted here")
    try:
        err = refused(capsys, ["gateway", "export-log", "--db", "data/reports.sqlite", "-o", "bind/registry"])
        assert "bind/registry is the device registry directory" in err
        files = GatewayFiles()
        files.add(fresh / "data" / "sub" / "deep" / "file", "a deep file")
        assert (files.which(bind / "sub") or "").startswith("the place of a directory that holds a deep file")
        assert not os.path.lexists(fresh / "data" / "registry")
    finally:
        subprocess.run(["umount", str(bind)], check=True)


@pytest.fixture
def gw(tmp_path: Path) -> Path:
    """A gateway with a store and an empty registry (no devices yet: an empty keys directory)."""
    store_at(tmp_path / "data" / "reports.sqlite")
    Registry(tmp_path / "data" / "registry").close()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw-test"\ndata_dir = "data"\n[http]\nenabled = false\n')
    return cfg


@pytest.mark.parametrize("dest, what", [
    ("data/registry/keys", "the device keys directory"),
    ("data/registry/keys/backup-1", "the device keys directory"),
    ("data/reports.sqlite-wal", "the report store's write-ahead log"),
    ("data/retention.json", "the gateway's retention settings"),
    ("data/retention-confirm", "the gateway's retention confirmation"),
])
def test_backup_dest_is_never_a_gateway_place(gw: Path, dest: str, what: str) -> None:
    """Fails before: the empty keys directory was replaced by the backup (renamed over it), and a backup
    directory was made at the store's -wal, at retention.json or inside the keys directory."""
    keys = gw.parent / "data" / "registry" / "keys"
    before = sorted(p.name for p in (gw.parent / "data").iterdir())
    with pytest.raises(BackupError) as failed:
        make_backup(load_config(gw, read_only=True), gw.parent / dest)
    assert failed.value.reason == "gateway_file" and failed.value.path == gw.parent / dest
    assert str(failed.value).startswith("%s is %s" % (gw.parent / dest, what)), str(failed.value)
    assert "a backup is never written in place of the gateway's own files" in str(failed.value)
    assert keys.is_dir() and list(keys.iterdir()) == []
    assert sorted(p.name for p in (gw.parent / "data").iterdir()) == before
    assert not any(p.name.startswith(".") for p in (gw.parent / "data").iterdir())  # no partial directory


def test_backup_beside_the_data_still_works(gw: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gateway", "backup", str(gw.parent / "backups" / "b1"), "-c", str(gw)]) == 0
    assert (gw.parent / "backups" / "b1" / "MANIFEST.json").is_file()
    assert main(["gateway", "backup", str(gw.parent / "data" / "registry"), "-c", str(gw)]) == 1
    assert capsys.readouterr().err.startswith("error (gateway_file): %s is the device registry directory;"
                                              % (gw.parent / "data" / "registry"))
