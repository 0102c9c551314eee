"""``civicedge gateway retention`` reads the store as ``gateway run`` does before opening it (review MEDIUM-3).

It opened the store with a plain read-only connection: on a 0-byte reports.sqlite with a -wal holding
pages SQLite deleted that -wal (the commits in it), the case store_kind refuses without opening.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import make_env

from gateway.retention_clock import META_KEY
from gateway.storage import ReportStore
from hil.cli.main import main


def _wal_of_a_store(tmp_path: Path) -> bytes:
    """The -wal of a store killed before its first checkpoint: its tables and rows are only in there."""
    src = tmp_path / "src.sqlite"
    conn = sqlite3.connect(src, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    wal = (tmp_path / "src.sqlite-wal").read_bytes()
    conn.close()
    return wal


def test_a_0_byte_store_with_a_wal_is_refused_and_its_wal_kept(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    wal = _wal_of_a_store(tmp_path)
    db.write_bytes(b"")
    db.with_name("reports.sqlite-wal").write_bytes(wal)
    assert main(["gateway", "retention", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error (open_failed): ") and "is empty (0 bytes)" in err and "-wal" in err
    assert db.with_name("reports.sqlite-wal").read_bytes() == wal  # still there, unchanged
    assert db.read_bytes() == b""
    assert not db.with_name("reports.sqlite-shm").exists()


@pytest.mark.parametrize("saved", ["[1, 2]", '"held"', "null", "not json", '{"hold": {"since": "x"}}'])
def test_a_saved_state_the_gateway_cannot_read_is_said_so_not_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], saved: str) -> None:
    cfg = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    store.save_meta(META_KEY, saved)
    store.close()
    assert main(["gateway", "retention", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("retention is not held: its saved state (meta %s) cannot be read" % META_KEY), out


def test_a_held_state_is_shown_without_changing_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    hold = {"reason": "clock_ahead", "since": 1_700_000_000, "agreed_s": 0, "detail": "the clock is 200 days ahead"}
    store.save_meta(META_KEY, json.dumps({"hold": hold, "ran_at": None, "days": None}))
    store.close()
    listing = sorted(p.name for p in db.parent.iterdir())
    assert main(["gateway", "retention", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out == (
        "retention held since 2023-11-14 22:13:20 UTC (gateway clock): the clock is 200 days ahead\n")
    assert sorted(p.name for p in db.parent.iterdir()) == listing  # no -wal or -shm left beside it


def test_a_damaged_store_is_an_error_with_its_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    ReportStore(db, gateway_id="gw-test").close()
    with db.open("r+b") as fh:
        fh.write(b"this is no longer a SQLite header")
    assert main(["gateway", "retention", "--config", str(cfg)]) == 1
    assert capsys.readouterr().err.startswith("error (corrupt): report store %s is no longer a database" % db)
