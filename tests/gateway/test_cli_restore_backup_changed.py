"""A backup written between restore's check and its copy (an sqlite3 session left open on the backup's store,
which restore tolerates as an empty -wal and a -shm) is refused: the copy is hashed as it is made, and nothing
is swapped in (review M3)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import make_env

from gateway.cli import restore_cmd
from gateway.storage import ReportRecord, ReportStore
from hil.cli.main import main


def _records(first: int, count: int, now: float) -> list[ReportRecord]:
    return [ReportRecord(device="bin-1", seq=s, kind="bin", zone="north", type="win", w=int(now) - 3600 * (90 - s),
                         l=900, m={"fill": 95}, e={}, a=[], fw="1.0", received_at=float(now), link="serial:x",
                         digest="%064x" % s) for s in range(first, first + count)]


def _count(db: Path) -> int:
    conn = sqlite3.connect(db.as_uri() + "?mode=ro&immutable=1", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0])
    finally:
        conn.close()


def test_a_backup_written_after_its_check_is_not_restored(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_env(tmp_path)
    live = tmp_path / "data" / "reports.sqlite"
    now = time.time()
    store = ReportStore(live, gateway_id="gw-test")
    store.insert_batch(_records(1, 20, now))
    store.close()
    assert main(["gateway", "backup", str(tmp_path / "bk"), "--config", str(cfg)]) == 0
    store = ReportStore(live, gateway_id="gw-test")
    store.insert_batch(_records(21, 10, now))  # the live store moved on: 30 reports
    store.close()
    before = sorted(p.name for p in live.parent.iterdir())
    db = tmp_path / "bk" / "reports.sqlite"
    session = sqlite3.connect(db)  # an operator's session on the backup, left open: an empty -wal and a -shm
    session.execute("SELECT COUNT(*) FROM reports").fetchone()
    real_check = restore_cmd.check_backup

    def check_then_the_session_writes(path: Path) -> restore_cmd.Backup:
        backup = real_check(path)  # the checksums match here
        session.execute("DELETE FROM reports WHERE seq > 5")
        session.commit()
        session.close()  # the last close checkpoints into the backup's store
        return backup

    monkeypatch.setattr(restore_cmd, "check_backup", check_then_the_session_writes)
    capsys.readouterr()
    assert main(["gateway", "restore", str(tmp_path / "bk"), "--config", str(cfg)]) != 0
    err = capsys.readouterr().err
    assert "checksum_mismatch" in err and "the backup changed during the restore" in err
    assert "nothing was restored" in err and str(db) in err
    assert _count(live) == 30  # the live store as it was: nothing swapped in
    assert sorted(p.name for p in live.parent.iterdir()) == before  # no staged copy, no aside, no marker left
    assert not list((tmp_path / "data").glob("**/.restore-*"))
