"""Read-only commands pointed at a backup's store leave it as `civicedge gateway restore` accepts it.

City IT QA: `gateway export-log --db <backup>/reports.sqlite` and `routes plan --db <backup>/reports.sqlite`
left an empty ``reports.sqlite-wal`` and a ``-shm`` beside the copy (SQLite's read-only open of a WAL
database in a directory it may write), and the restore then refused the backup (files not in its
MANIFEST.json). A store no gateway holds and without a ``-wal`` with content is now read ``immutable``
by these one-shot reads; a store a gateway holds is still read as any reader reads it, seeing its commits.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
from conftest import make_env

from gateway.storage import ReportRecord, ReportStore
from gateway.storage.provenance import export_chain_summary
from gateway.storage.sqlite_uri import ReadHold, read_only_uri, store_is_held
from hil.cli.main import main


def record(seq: int, now: float) -> ReportRecord:
    w = int(now) - 3600 * (30 - seq)
    return ReportRecord(device="bin-1", seq=seq, kind="bin", zone="north", type="win", w=w, l=900,
                        m={"fill": 95}, e={}, a=[], fw="1.0", received_at=float(w + 900), link="serial:x",
                        digest="%064x" % seq)


def gateway_with_backup(tmp_path: Path) -> tuple[Path, Path]:
    """(config, backup dir): a stopped gateway whose bin-1 is full, and a real backup of it."""
    cfg = make_env(tmp_path)
    store = ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test")
    store.insert_batch([record(s, time.time()) for s in range(1, 21)])
    store.close()
    assert main(["gateway", "backup", str(tmp_path / "bk"), "--config", str(cfg)]) == 0
    return cfg, tmp_path / "bk"


def test_export_log_and_routes_plan_on_a_backup_leave_it_restorable(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg, bk = gateway_with_backup(tmp_path)
    before = sorted(p.name for p in bk.iterdir())
    capsys.readouterr()

    out = tmp_path / "chain.jsonl"
    assert main(["gateway", "export-log", "--db", str(bk / "reports.sqlite"), "-o", str(out)]) == 0
    assert "exported 20 entries" in capsys.readouterr().err  # one chain entry per report
    assert len(out.read_text().splitlines()) == 20
    assert sorted(p.name for p in bk.iterdir()) == before

    plan = tmp_path / "plan.json"
    # --db alone: the backup's devices.sqlite (no registry/ beside its store) gives the bins' locations
    assert main(["routes", "plan", "--db", str(bk / "reports.sqlite"), "--depot", "52.37,4.89",
                 "--out", str(plan)]) == 0, capsys.readouterr()
    assert "bin-1" in json.dumps(json.loads(plan.read_text()))
    assert sorted(p.name for p in bk.iterdir()) == before

    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 0, capsys.readouterr().err


def _one_shot_uri(db: Path) -> str:
    """The URI a one-shot read of ``db`` chooses where it takes the hold (a directory it cannot write; here
    ``hold_live=True``: a gateway's writable data directory is read plainly, see below), the hold released
    right after."""
    with ReadHold(db, hold_live=True) as hold:
        return hold.uri


def test_a_held_store_is_read_with_its_wal_and_a_free_one_immutable(tmp_path: Path) -> None:
    """The one-shot read's choice: immutable only for a store no gateway holds with nothing in its -wal."""
    db = tmp_path / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    try:
        store.insert_batch([record(s, time.time()) for s in range(1, 4)])
        assert store_is_held(db) is True  # the lock of a store open in this very process is seen too
        assert _one_shot_uri(db) == db.resolve().as_uri() + "?mode=ro"
        # the live store's commits, still in its -wal, are read
        assert export_chain_summary(db, io.StringIO()).count == 3
        store.insert_batch([record(4, time.time())])
        assert export_chain_summary(db, io.StringIO()).count == 4
    finally:
        store.close()
    assert store_is_held(db) is False
    assert _one_shot_uri(db) == db.resolve().as_uri() + "?mode=ro&immutable=1"
    with ReadHold(db) as hold:  # the lock file there, the directory writable: a live data directory, read plainly
        assert hold.live and hold.granted is False and hold.uri == db.resolve().as_uri() + "?mode=ro"
    assert read_only_uri(db) == db.resolve().as_uri() + "?mode=ro"  # a kept connection: as before
    (tmp_path / "reports.sqlite-wal").write_bytes(b"\0" * 32)  # a killed gateway's commits: read with them
    assert _one_shot_uri(db) == db.resolve().as_uri() + "?mode=ro"
    os.unlink(tmp_path / "reports.sqlite-wal")
    (tmp_path / "reports.sqlite.lock").chmod(0)
    if os.geteuid() != 0:  # root opens it all the same
        assert store_is_held(db) is None  # cannot tell: not read immutable
        assert _one_shot_uri(db) == db.resolve().as_uri() + "?mode=ro"


def test_restore_accepts_what_a_reader_left_beside_the_backups_store_but_no_wal_with_content(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A backup read by sqlite3 (or an export-log before this fix) holds an empty -wal and a -shm: no
    change in them, the restore copies the checksummed file alone, so it goes ahead and says so; a
    -wal with content (changes the checksums do not cover) is still refused, with its -shm."""
    import sqlite3

    cfg, bk = gateway_with_backup(tmp_path)
    db = bk / "reports.sqlite"
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)  # an ordinary reader
    conn.execute("SELECT COUNT(*) FROM reports").fetchone()
    conn.close()
    assert (bk / "reports.sqlite-wal").stat().st_size == 0 and (bk / "reports.sqlite-shm").is_file()
    os.replace(bk / "reports.sqlite-wal", tmp_path / "empty-wal")
    (bk / "reports.sqlite-wal").write_bytes(b"x" * 100)
    capsys.readouterr()
    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 1
    assert capsys.readouterr().err.startswith(
        "error (bad_backup): %s holds reports.sqlite-shm, reports.sqlite-wal, not listed in MANIFEST.json" % bk)
    os.replace(tmp_path / "empty-wal", bk / "reports.sqlite-wal")

    assert main(["gateway", "restore", str(bk), "--config", str(cfg)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert ("note: the backup holds reports.sqlite-shm, reports.sqlite-wal, left by a program that read its copy: no "
            "changes in them (no -wal with content), not restored, left in place") in out
    assert "20 report(s)" in out
    conn = sqlite3.connect((tmp_path / "data" / "reports.sqlite").as_uri() + "?mode=ro&immutable=1", uri=True)
    try:
        assert conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0] == 20
    finally:
        conn.close()
    assert sorted(p.name for p in bk.iterdir() if p.name.startswith("reports.sqlite-")) == [
        "reports.sqlite-shm", "reports.sqlite-wal"]
