"""The report store failing under a running gateway: damaged file, full disk, file deleted or replaced."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from pathlib import Path

import pytest
from conftest import make_env

from gateway.errors import StorageError
from gateway.storage import ReportRecord, ReportStore
from hil.cli.main import main

T0 = 1_700_000_100 - (1_700_000_100 % 3600)


def rec(device: str, seq: int) -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind="bin", zone="north", type="win", w=T0, l=900,
                        m={"fill": 40}, e={}, a=[], fw="1.0", received_at=T0 + 5.0, link="serial:/dev/x",
                        digest="%064x" % seq)


def damage_reports_table(db: Path) -> None:
    """Overwrite the root pages of the ``reports`` table and its (device, seq) index: damage in the middle
    of the file, so the header, the schema and the chain head still read fine."""
    conn = sqlite3.connect(db)
    roots = [r for (r,) in conn.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = 'reports'"
                                        " AND (type = 'table' OR name LIKE 'sqlite_autoindex%')")]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    assert len(roots) == 2
    with db.open("r+b") as fh:
        for root in roots:
            fh.seek((root - 1) * page_size)
            fh.write(b"\xa5" * page_size)


def filled_store(db: Path, n: int = 600) -> None:
    store = ReportStore(db, gateway_id="gw1")
    for start in range(1, n, 200):
        store.insert_batch([rec("b%d" % (s % 7), s) for s in range(start, start + 200)])
    store.close()


def test_a_store_damaged_mid_file_is_a_storage_error_naming_the_file_and_the_backup(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    filled_store(db)
    damage_reports_table(db)
    store = ReportStore(db, gateway_id="gw1")  # header, schema and chain head read fine
    try:
        with pytest.raises(StorageError) as info:
            store.max_seqs()
        assert info.value.reason == "corrupt"
        assert str(db) in str(info.value) and "backup" in str(info.value)
        with pytest.raises(StorageError) as info:
            store.insert_batch([rec("b1", 10_000)])
        assert info.value.reason == "corrupt"
    finally:
        store.close()


def test_gateway_run_on_a_store_damaged_mid_file_fails_cleanly(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    filled_store(db)
    damage_reports_table(db)
    # Should the gateway start anyway, SIGTERM stops it (exit 0, failing the test) instead of a hang.
    guard = threading.Timer(30, os.kill, (os.getpid(), signal.SIGTERM))
    guard.start()
    try:
        assert main(["gateway", "run", "--config", str(cfg)]) == 1
    finally:
        guard.cancel()
    err = capsys.readouterr().err
    assert "error (corrupt)" in err and str(db) in err and "backup" in err
    assert "Traceback" not in err
