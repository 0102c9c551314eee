"""A ``-shm`` left without its ``-wal`` that says the ``-wal`` held commits: the start refuses the store.

DR drill H4: after ``kill -9`` of the gateway an operator deleted ``reports.sqlite-wal`` (leaving the ``-shm``
and ``.lock``); ``run --check`` said the store was readable and ``run`` that it was "checked at start: sound",
and the store had silently gone back from 17 reports to 10 (those of its last checkpoint), acknowledged
reports lost. The states are made for real: a child process holding the store dies (``os._exit``, as a kill
-9 leaves it) with commits in the ``-wal`` only, then the ``-wal`` is removed.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import make_env

from gateway.errors import StorageError
from gateway.storage import ReportStore
from gateway.storage.wal_index import read_wal_index

# Stores reports seq FIRST..LAST at PATH, then: "close" (a clean stop), "kill" (dies holding it, the commits
# in the -wal only), "checkpoint-kill" (checkpoints everything, then dies: -wal and -shm left, nothing pending).
WRITER = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    from gateway.storage import ReportRecord, ReportStore
    path, first, last, how = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    store = ReportStore(path, gateway_id="gw-test")
    store._conn.execute("PRAGMA wal_autocheckpoint=0")
    for s in range(first, last + 1):
        store.insert_batch([ReportRecord(
            device="bin-1", seq=s, kind="bin", zone="north", type="win", w=1_790_000_000 + 900 * s, l=900,
            m={"fill": 40}, e={}, a=[], fw="1.0", received_at=1_790_000_000.0, link="serial:x",
            digest="%064x" % s)])
    if how == "checkpoint-kill":
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if how != "close":
        os._exit(0)
    store.close()
''')


def write(db: Path, first: int, last: int, how: str) -> None:
    done = subprocess.run([sys.executable, "-c", WRITER, str(db), str(first), str(last), how],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def side(db: Path, suffix: str) -> Path:
    return db.with_name(db.name + suffix)


def count(db: Path) -> tuple[int, int]:
    store = ReportStore(db, gateway_id="gw-test")
    try:
        n, top = store._conn.execute("SELECT COUNT(*), MAX(seq) FROM reports").fetchone()
    finally:
        store.close()
    return int(n), int(top)


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "run", "--config", str(config), "--check"],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return make_env(tmp_path)


def store_of(config: Path) -> Path:
    return config.parent / "data" / "reports.sqlite"


def killed_then_wal_deleted(db: Path) -> None:
    write(db, 1, 10, "close")
    write(db, 11, 17, "kill")
    assert side(db, "-wal").stat().st_size > 0 and side(db, "-shm").exists()
    side(db, "-wal").unlink()


def test_a_deleted_wal_with_pending_commits_is_refused_at_start_and_by_the_check(config: Path) -> None:
    db = store_of(config)
    killed_then_wal_deleted(db)
    index = read_wal_index(side(db, "-shm"))
    assert index is not None and index.pending >= 7  # a frame or more per commit
    before = db.read_bytes()
    with pytest.raises(StorageError) as err:
        ReportStore(db, gateway_id="gw-test")
    assert err.value.reason == "wal_missing"
    msg = str(err.value)
    assert "%d frame(s)" % index.pending in msg and "mv -n /where/it/is/reports.sqlite-wal %s-wal" % db in msg
    assert "mv -n %s-shm %s-shm.orphaned" % (db, db) in msg
    # nothing was touched: no new -wal, the main file and -shm as they were
    assert not side(db, "-wal").exists() and db.read_bytes() == before
    assert read_wal_index(side(db, "-shm")) == index
    done = check(config)
    assert done.returncode == 1 and "error (wal_missing)" in done.stderr, (done.stdout, done.stderr)
    assert "config OK" not in done.stdout
    assert not side(db, "-wal").exists()
    run = subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "run", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "error (wal_missing)" in run.stderr, run.stderr
    assert not side(db, "-wal").exists()


def test_the_advice_works_the_wal_put_back_keeps_every_report(config: Path, tmp_path: Path) -> None:
    db = store_of(config)
    write(db, 1, 10, "close")
    write(db, 11, 17, "kill")
    moved = tmp_path / "reports.sqlite-wal"
    os.rename(side(db, "-wal"), moved)  # "moved elsewhere"
    with pytest.raises(StorageError):
        ReportStore(db, gateway_id="gw-test")
    os.rename(moved, side(db, "-wal"))  # the mv back the message gives
    assert check(config).returncode == 0
    assert count(db) == (17, 17)


def test_the_advice_works_moving_the_shm_aside_accepts_the_loss(config: Path) -> None:
    db = store_of(config)
    killed_then_wal_deleted(db)
    os.rename(side(db, "-shm"), side(db, "-shm.orphaned"))
    assert check(config).returncode == 0
    assert count(db) == (10, 10)  # what the last checkpoint left: the loss accepted on purpose


@pytest.mark.parametrize("state", ["fresh", "clean_stop", "killed", "shm_nothing_pending"])
def test_normal_states_start(config: Path, state: str, caplog: pytest.LogCaptureFixture) -> None:
    db = store_of(config)
    expect = (0, 0)
    if state == "clean_stop":
        write(db, 1, 10, "close")
        assert not side(db, "-wal").exists() and not side(db, "-shm").exists()
        expect = (10, 10)
    elif state == "killed":
        write(db, 1, 10, "close")
        write(db, 11, 17, "kill")
        assert side(db, "-wal").exists() and side(db, "-shm").exists()
        expect = (17, 17)
    elif state == "shm_nothing_pending":
        write(db, 1, 10, "close")
        write(db, 11, 17, "checkpoint-kill")  # all in the main file, then the -wal removed: nothing lost
        side(db, "-wal").unlink()
        index = read_wal_index(side(db, "-shm"))
        assert index is not None and index.pending == 0
        expect = (17, 17)
    assert check(config).returncode == 0
    if state == "fresh":
        store = ReportStore(db, gateway_id="gw-test")
        store.close()
        return
    with caplog.at_level("INFO", logger="gateway.storage.store"):
        assert count(db) == expect
    said = "left without its -wal" in caplog.text
    assert said == (state == "shm_nothing_pending")


def test_an_unreadable_or_short_shm_is_no_refusal(config: Path) -> None:
    db = store_of(config)
    write(db, 1, 10, "close")
    side(db, "-shm").write_bytes(b"\0" * 50)  # never initialised: nothing to tell
    assert read_wal_index(side(db, "-shm")) is None
    assert count(db) == (10, 10)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    conn.close()
