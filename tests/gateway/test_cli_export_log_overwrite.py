"""``export-log -o FILE`` never replaces stored data: a gateway file is refused even with --force, any
SQLite database too, another existing file without --force. Every case failed before (rc 0, file replaced)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import make_env

from gateway.storage import ReportRecord, ReportStore
from gateway.storage.provenance import verify_export_summary
from hil.cli.main import main

TOKEN = "t0ken-19ab4c335cf9770a637463c5be3003fef0bca803"


def record(seq: int) -> ReportRecord:
    return ReportRecord(device="bin-1", seq=seq, kind="bin", zone="north", type="win", w=1_700_000_000 + 900 * seq,
                        l=900, m={"fill": seq}, e={}, a=[], fw="1.0", received_at=1_700_000_000.0 + seq,
                        link="serial:x", digest="%064x" % seq)


@pytest.fixture
def gw(tmp_path: Path) -> Path:
    """A gateway directory: config with HTTP and an admin token, registry with keys, a store with 4 reports,
    retention.json. Returns the config."""
    cfg = make_env(tmp_path)
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    cfg.write_text(cfg.read_text().replace("enabled = false", 'port = 18811\nadmin_token_file = "admin.token"'))
    (tmp_path / "data" / "retention.json").write_text('{"overrides": []}\n')
    store = ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test")
    store.insert_batch([record(s) for s in range(1, 5)])
    store.close()
    return cfg


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(cfg: Path, out: Path, *extra: str) -> list[str]:
    return ["gateway", "export-log", "-c", str(cfg), "-o", str(out), *extra]


def test_the_gateways_own_files_are_refused_even_with_force(gw: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = gw.parent / "data"
    key = next((data / "registry" / "keys").iterdir())
    cases = {
        data / "registry" / "devices.sqlite": "the device registry",
        gw.parent / "admin.token": "the admin token file",
        gw: "the gateway's config file",
        data / "retention.json": "retention.json",
        key: "the device keys directory",
        data / "reports.sqlite-shm": "the report store's shared-memory index",
        data / "reports.sqlite.lock": "the report store's single-writer lock",
    }
    for target, what in cases.items():
        existed = target.exists()
        before = digest(target) if existed else None
        for force in ((), ("--force",)):
            assert main(export(gw, target, *force)) == 1, target
            out, err = capsys.readouterr()
            assert out == "" and err.startswith("error (gateway_file): %s is " % target) and what in err, err
            assert "not even with --force" in err and err.count("\n") == 1
            assert (digest(target) if existed else None) == before and target.exists() == existed
    assert sorted(p.name for p in gw.parent.iterdir()) == ["admin.token", "data", "gateway.toml"]


def test_the_live_stores_wal_is_refused(gw: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`-o data/reports.sqlite-wal` on a running gateway replaced its WAL (rc 0): the gateway went store_gone."""
    db = gw.parent / "data" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")  # open, as a running gateway holds it: its -wal exists
    try:
        wal = db.with_name("reports.sqlite-wal")
        assert wal.exists()
        ino = wal.stat().st_ino
        assert main(export(gw, wal, "--force")) == 1
        assert capsys.readouterr().err.startswith("error (gateway_file): %s is the report store's write-ahead log"
                                                  % wal)
        assert wal.stat().st_ino == ino
        store.insert_batch([record(5)])  # the store goes on working
    finally:
        store.close()
    assert main(["gateway", "export-log", "-c", str(gw)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


def test_links_to_gateway_files_are_refused(gw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = gw.parent / "admin.token"
    sym = tmp_path / "via-symlink.jsonl"
    sym.symlink_to(gw.parent / "data" / "registry" / "devices.sqlite")
    hard = tmp_path / "via-hardlink.jsonl"
    os.link(token, hard)
    for target, what in ((sym, "the device registry"), (hard, "the admin token file")):
        assert main(export(gw, target, "--force")) == 1
        assert capsys.readouterr().err.startswith("error (gateway_file): %s is %s" % (target, what))
    assert token.read_text() == TOKEN + "\n" and sym.is_symlink()


def test_any_sqlite_database_is_refused_even_with_force(gw: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "elsewhere" / "copy.sqlite"
    other.parent.mkdir()
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    before = digest(other)
    # --db from another directory: the config's store is still the gateway's
    for argv in (export(gw, other, "--force"),
                 ["gateway", "export-log", "--db", str(gw.parent / "data" / "reports.sqlite"), "-o", str(other)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error (sqlite_file): %s is an SQLite database" % other), err
    assert digest(other) == before


def test_another_existing_file_needs_force(gw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes, not an export\n")
    assert main(export(gw, notes)) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == ("error (exists): %s exists and is not an earlier provenance log export; give a "
                                 "new file name, or --force to replace it\n" % notes)
    assert notes.read_text() == "meeting notes, not an export\n"
    assert main(export(gw, notes, "--force")) == 0
    assert verify_export_summary(notes.read_text().splitlines(keepends=True)).count == 4


def test_an_earlier_export_or_an_empty_file_is_replaced(gw: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "chain.jsonl"
    out.write_text("")
    assert main(export(gw, out)) == 0
    first = out.read_text()
    assert verify_export_summary(first.splitlines(keepends=True)).count == 4
    store = ReportStore(gw.parent / "data" / "reports.sqlite", gateway_id="gw-test")
    store.insert_batch([record(5)])
    store.close()
    assert main(export(gw, out)) == 0  # yesterday's export: replaced without --force
    assert verify_export_summary(out.read_text().splitlines(keepends=True)).count == 5
    assert out.read_text().startswith(first)
    capsys.readouterr()


def test_help_mentions_force(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["gateway", "export-log", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--force" in text and "earlier export" in text and "SQLite databases are always refused" in text
