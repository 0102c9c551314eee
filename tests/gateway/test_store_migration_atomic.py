"""The store migration is one transaction: cut off anywhere, the store stays at its old version.

Upgrade drill: `_migrate_v1` dropped `readings` and committed, then the schema DDL, the ALTERs and the
version row each went on their own; a kill -9 in between left `schema_version` 1 without a `readings`
table, and the v1 gateway an operator rolled back to showed 0 readings.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.storage import ReportQueries, ReportRecord, ReportStore
from gateway.storage import store as store_mod
from gateway.storage.schema import SCHEMA_VERSION

T0 = 1_700_000_100 - (1_700_000_100 % 3600)

V1_READINGS = """
CREATE TABLE readings (report_id INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE, device TEXT NOT NULL,
    kind TEXT NOT NULL, zone TEXT NOT NULL, field TEXT NOT NULL, w INTEGER NOT NULL, l INTEGER NOT NULL,
    value INTEGER NOT NULL);
CREATE INDEX readings_field_w ON readings (field, w);
"""

# The last step of the migration (the version row) fails, as a kill right before COMMIT would cut it off.
FAIL_LAST_STEP = ("CREATE TRIGGER fail_version BEFORE INSERT ON meta WHEN NEW.key = 'schema_version' "
                  "BEGIN SELECT RAISE(ABORT, 'injected: the version row fails'); END")


def rec(device: str, seq: int, m: dict[str, int]) -> ReportRecord:
    w = T0 + 900 * seq
    return ReportRecord(device=device, seq=seq, kind="bin", zone="north", type="win", w=w, l=900, m=m, e={},
                        a=[], fw="1.0", received_at=w + 5.0, link="serial:/dev/x", digest="%064x" % seq)


def v1_store(db: Path, *extra: str) -> None:
    """A store as a version 1 gateway left it: readings in a table, no window_duplicates, retired_seqs."""
    store = ReportStore(db, gateway_id="gw1")
    store.insert_batch([rec("b1", 1, {"fill": 30, "temp": 9}), rec("b2", 2, {"fill": 90})])
    store.close()
    conn = sqlite3.connect(db)
    conn.executescript("DROP VIEW readings; DROP TABLE window_duplicates; DROP TABLE retired_seqs;"
                       "DROP INDEX alarms_report;" + V1_READINGS)
    conn.execute("INSERT INTO readings SELECT r.id, r.device, r.kind, r.zone, j.key, r.w, r.l, j.value"
                 " FROM reports r, json_each(r.m) j")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    for sql in extra:
        conn.execute(sql)
    conn.commit()
    conn.close()


def v3_store(db: Path, *extra: str) -> None:
    """A store as a version 3 gateway left it (no retired_seqs, no alarms (report_id) index)."""
    store = ReportStore(db, gateway_id="gw1")
    store.insert_batch([rec("b1", 1, {"fill": 30}), rec("b1", 2, {"fill": 31})])
    store.close()
    conn = sqlite3.connect(db)
    conn.executescript("DROP TABLE retired_seqs; DROP INDEX alarms_report;")
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    for sql in extra:
        conn.execute(sql)
    conn.commit()
    conn.close()


def dump(db: Path) -> list[str]:
    """Every table, index, view, trigger and row of the store, read through a read-only connection."""
    conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.mark.parametrize("make, old", [(v1_store, 1), (v3_store, 3)])
def test_a_migration_failing_at_its_last_step_leaves_the_store_at_its_old_version(tmp_path: Path, make: object,
                                                                                   old: int) -> None:
    """Test fails before: the dropped readings table (v1) and the new tables were already committed."""
    db = tmp_path / "r.sqlite"
    make(db, FAIL_LAST_STEP)  # type: ignore[operator]
    before, raw = dump(db), db.read_bytes()
    with pytest.raises(StorageError, match="injected: the version row fails"):
        ReportStore(db, gateway_id="gw1")
    assert db.read_bytes() == raw  # byte for byte
    assert dump(db) == before  # its old tables (v1: readings, a table), rows and version
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(old),)
    if old == 1:
        assert conn.execute("SELECT type FROM sqlite_master WHERE name = 'readings'").fetchone() == ("table",)
        assert conn.execute("SELECT COUNT(*) FROM readings").fetchone() == (3,)
    conn.execute("DROP TRIGGER fail_version")  # the cause fixed: the next start migrates
    conn.commit()
    conn.close()
    ReportStore(db, gateway_id="gw1").close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    conn.close()


def test_a_migration_killed_before_its_commit_leaves_a_version_1_store_with_its_readings(tmp_path: Path) -> None:
    """kill -9 of a real process at the migration's last step (as the drill's kill at 3.5 s).
    Test fails before: the store was left at schema_version 1 without a readings table."""
    db = tmp_path / "r.sqlite"
    v1_store(db)
    before = dump(db)
    child = ("import os, signal, sys\n"
             "from gateway.storage import schema\n"
             "from gateway.storage import ReportStore\n"
             "real = schema._complete_window_duplicates\n"
             "def killed(conn):\n"
             "    real(conn)\n"
             "    os.kill(os.getpid(), signal.SIGKILL)\n"
             "schema._complete_window_duplicates = killed\n"
             "ReportStore(sys.argv[1], gateway_id='gw1')\n")
    proc = subprocess.run([sys.executable, "-c", child, str(db)], capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert dump(db) == before
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT type FROM sqlite_master WHERE name = 'readings'").fetchone() == ("table",)
    conn.close()


def test_a_version_1_store_is_migrated_in_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every statement that changes the store at the migrating open is between one BEGIN IMMEDIATE and
    its COMMIT (SQLite's own trace of the connection). Test fails before: the DROP committed on its own."""
    db = tmp_path / "r.sqlite"
    v1_store(db)
    traced: list[str] = []
    real_connect = sqlite3.connect

    def traced_connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)  # type: ignore[arg-type]
        conn.set_trace_callback(traced.append)
        return conn

    monkeypatch.setattr(store_mod.sqlite3, "connect", traced_connect)
    store = ReportStore(db, gateway_id="gw1")
    opened = len(traced)  # the open only: the stop commits the store's stamp before its checkpoint
    store.close()
    monkeypatch.undo()
    words = [s.split(None, 1)[0].upper() for s in traced[:opened] if s.strip()]
    begins = [i for i, w in enumerate(words) if w == "BEGIN"]
    assert len(begins) == 1 and words.count("COMMIT") == 1
    begin, commit = begins[0], words.index("COMMIT")
    assert "DROP" in words[begin:commit] and "INSERT" in words[begin:commit]
    changes = [i for i, w in enumerate(words) if w in ("DROP", "CREATE", "ALTER", "INSERT")]
    assert changes and all(begin < i < commit for i in changes)

    conn = sqlite3.connect(db)
    assert conn.execute("SELECT type FROM sqlite_master WHERE name = 'readings'").fetchone() == ("view",)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    conn.close()
    q = ReportQueries(db)
    assert [(r.device, r.value) for r in q.readings(field="fill", start=T0, end=T0 + 3600)] == [("b1", 30), ("b2", 90)]
