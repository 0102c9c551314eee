"""A store overwritten or written in place while the gateway runs, the cases the first fix missed (review C).

H1: a ``cp`` landing during a COMMIT was taken as the gateway's own write (the stamp was taken again after every
COMMIT, since an autocheckpoint may have run in it); the store now runs every checkpoint itself
(``wal_autocheckpoint=0``) and a COMMIT no longer moves the stamp. H2: a ``cp`` then a stop within 5 s (no watch
between) had the stop's checkpoint write the -wal into the copy. M1: a ``touch`` (mtime only) had the -wal with
acknowledged reports set aside and the next start go on without them. L2: a copy SQLite cannot read (no read lock
to hold off the close checkpoint). L3: another SQLite connection committing to the running store. Real store,
real files, real SQLite; the cp is injected at the exact statement through SQLite's statement trace.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_env

from gateway.errors import StorageError
from gateway.storage import ReportRecord, ReportStore
from gateway.storage.store import CHECKPOINT_FRAMES

pytestmark = pytest.mark.timeout(120)
T0 = 1_790_000_000


def rec(seq: int) -> ReportRecord:
    return ReportRecord(device="bin-1", seq=seq, kind="bin", zone="north", type="win", w=T0 + 900 * seq, l=900,
                        m={"fill": 40, "pad": "x" * 300}, e={}, a=[], fw="1.0", received_at=T0 + 900 * seq + 5.0,
                        link="serial:x", digest="%064x" % seq)


def side(db: Path, suffix: str) -> Path:
    return db.with_name(db.name + suffix)


def integrity(db: Path) -> str:
    conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def seqs(db: Path) -> tuple[int, int]:
    conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        n, top = conn.execute("SELECT COUNT(*), MAX(seq) FROM reports").fetchone()
    finally:
        conn.close()
    return int(n), int(top)


def snapshot(db: Path, to: Path) -> None:
    """A consistent copy, as civicedge gateway backup makes (SQLite's backup API, read-only source)."""
    src = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True)
    dst = sqlite3.connect(str(to))
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def cp(src: Path, dst: Path) -> None:
    subprocess.run(["cp", str(src), str(dst)], check=True)


def run_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "run", "--config", str(config), "--check"],
                          capture_output=True, text=True, timeout=60)


def store_with_backup(tmp_path: Path, first: int = 600, then: int = 300) -> tuple[Path, ReportStore, Path, int]:
    db = tmp_path / "data" / "reports.sqlite"
    db.parent.mkdir(exist_ok=True)
    store = ReportStore(db, gateway_id="gw-test")
    for seq in range(1, first + 1):  # past CHECKPOINT_FRAMES: the main file holds checkpointed pages
        store.insert_batch([rec(seq)])
    bk = tmp_path / "bk.sqlite"
    snapshot(db, bk)
    for seq in range(first + 1, first + then + 1):
        store.insert_batch([rec(seq)])
    return db, store, bk, first + then


def test_a_cp_then_a_stop_before_any_watch_does_not_checkpoint_into_the_copy(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """H2, fails before: close() looked only at what a watch had found; its wal_checkpoint(TRUNCATE) wrote the
    -wal into the copy (database disk image is malformed)."""
    db, store, bk, _top = store_with_backup(tmp_path)
    assert store.check_file() is None
    cp(bk, db)  # `cp backup over the store && systemctl restart`: less than 5 s, no watch between
    copied = db.read_bytes()
    with caplog.at_level(logging.WARNING, logger="gateway.storage.store"):
        store.close()
    assert db.read_bytes() == copied
    assert side(db, "-wal.overwritten").stat().st_size > 0 and not side(db, "-wal").exists()
    assert integrity(db) == "ok" and seqs(db) == (600, 600)
    assert "was overwritten in place" in caplog.text and "its size went from" in caplog.text


@pytest.mark.parametrize("trial", range(5))
def test_a_cp_landing_inside_a_commit_is_found(tmp_path: Path, trial: int) -> None:
    """H1, fails before: the stamp was taken again right after each COMMIT, so a cp landing during it was the
    gateway's own write, and the next checkpoints mixed the -wal into the copy (9 of 30 random trials). The cp
    runs exactly when SQLite starts the COMMIT (its statement trace), at a different commit each trial."""
    db, store, bk, top = store_with_backup(tmp_path, first=600, then=20 * trial)
    copied = bk.read_bytes()
    armed = [True]

    def at_statement(sql: str) -> None:
        if sql == "COMMIT" and armed[0]:
            armed[0] = False
            cp(bk, db)

    store._conn.set_trace_callback(at_statement)
    found = None
    try:
        with pytest.raises(StorageError) as err:  # that batch is not acknowledged
            store.insert_batch([rec(top + 1)])
        assert err.value.reason == "file_gone"
        found = store.file_problem()
        with pytest.raises(StorageError):
            for seq in range(top + 2, top + 400):  # never another checkpoint into the copy
                store.insert_batch([rec(seq)])
    finally:
        store._conn.set_trace_callback(None)
        store.close()
    assert found is not None and "overwritten in place" in found
    assert db.read_bytes() == copied and integrity(db) == "ok"


def test_checkpoints_are_the_stores_own_and_keep_the_wal_bounded(tmp_path: Path) -> None:
    """With SQLite's autocheckpoint off the store checkpoints itself once the WAL holds CHECKPOINT_FRAMES frames:
    the -wal stays about that size over many commits, the main file grows, and nothing is taken for an overwrite."""
    db = tmp_path / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    try:
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        page = int(store._conn.execute("PRAGMA page_size").fetchone()[0])
        sizes = set()
        for seq in range(1, 3001):
            store.insert_batch([rec(seq)])
            sizes.add(db.stat().st_size)
            if seq % 100 == 0:
                assert store.check_file() is None, seq
        assert len(sizes) > 3
        assert side(db, "-wal").stat().st_size <= 32 + (CHECKPOINT_FRAMES + 50) * (page + 24)
    finally:
        store.close()
    assert seqs(db) == (3000, 3000) and integrity(db) == "ok"


def test_a_checkpoint_a_reader_holds_off_is_tried_again(tmp_path: Path) -> None:
    """A reader's snapshot keeps a checkpoint from finishing (as it did SQLite's autocheckpoint): the WAL grows
    meanwhile, nothing is lost, and once the reader is gone the next commits bring it back."""
    db = tmp_path / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    reader = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM reports").fetchone()  # holds its snapshot
        for seq in range(1, 1501):
            store.insert_batch([rec(seq)])
        held = side(db, "-wal").stat().st_size
        reader.execute("COMMIT")
        for seq in range(1501, 3001):
            store.insert_batch([rec(seq)])
            assert store.check_file() is None
        assert side(db, "-wal").stat().st_size <= held  # the log was started over, not grown further
    finally:
        reader.close()
        store.close()
    assert seqs(db) == (3000, 3000)


def test_a_touch_is_said_and_the_next_start_refuses_until_the_wal_is_put_back(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    """M1, fails before: after `touch reports.sqlite` the stop set the -wal (50 acknowledged reports) aside
    and the next start opened an empty store (its main file was still 0 bytes), run --check saying nothing."""
    config = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    for seq in range(1, 51):
        store.insert_batch([rec(seq)])
    os.utime(db, ns=(db.stat().st_atime_ns, db.stat().st_mtime_ns + 10**9))  # what touch does
    problem = store.check_file()
    store.close()
    assert problem is not None and "only its modification time changed" in problem and "touch" in problem
    assert side(db, "-wal.overwritten").exists()
    with pytest.raises(StorageError) as refused:
        ReportStore(db, gateway_id="gw-test")
    assert refused.value.reason == "overwritten_aside"
    checked = run_check(config)
    assert checked.returncode != 0 and "overwritten" in checked.stdout + checked.stderr
    # the put-back commands, as the detection ERROR and the refusal give them
    back = problem.split("put both back (")[1].split(") and start")[0]
    assert back == str(refused.value).split("put them back: ")[1].split(" and start")[0]
    subprocess.run(back, shell=True, check=True)
    again = ReportStore(db, gateway_id="gw-test")
    again.close()
    assert seqs(db) == (50, 50) and integrity(db) == "ok"


@pytest.mark.parametrize("left", ["-wal.overwritten", "-shm.overwritten"])
def test_a_stop_cut_off_between_the_two_renames_is_refused(tmp_path: Path, left: str) -> None:
    """L1: one of the pair moved aside, the other still in place (a stop cut off between the renames): either
    way the start refuses (a -wal left alone would be replayed onto the copy; a -shm alone was wal_missing,
    whose advice put the set-aside -wal back onto the copy)."""
    db = tmp_path / "reports.sqlite"
    subprocess.run([sys.executable, "-c", (
        "import os, sys; from pathlib import Path\n"
        "from gateway.storage import ReportRecord, ReportStore\n"
        "s = ReportStore(Path(sys.argv[1]), gateway_id='gw-test')\n"
        "for q in range(1, 11):\n"
        "    s.insert_batch([ReportRecord('bin-1', q, 'bin', 'north', 'win', 1_790_000_000 + 900 * q, 900, {'fill': 1},"
        " {}, [], '1.0', 1.0, 'serial:x', '%064x' % q)])\n"
        "os._exit(0)\n"), str(db)], check=True, timeout=60)  # killed: -wal and -shm left
    kept = "-wal" if left.startswith("-shm") else "-shm"
    os.rename(side(db, left.split(".")[0]), side(db, left))
    assert side(db, kept).exists()
    with pytest.raises(StorageError) as refused:
        ReportStore(db, gateway_id="gw-test")
    assert refused.value.reason == "overwritten_aside" and left in str(refused.value)


def test_a_close_that_cannot_hold_off_the_checkpoint_leaves_the_copy_as_copied(tmp_path: Path,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    """L2, fails before: when the read-only blocker cannot be opened (here: no descriptor left, the process at
    its open-files limit), the writer's close checkpointed the -wal into the copy. Now the writer is kept open
    (never closed, as a kill leaves it) and the copy stays exactly as copied."""
    db, store, bk, _top = store_with_backup(tmp_path, first=600, then=300)
    cp(bk, db)
    copied = db.read_bytes()
    assert store.check_file() is not None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    try:
        top = max(int(n) for n in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, hard))
        while True:  # the free numbers below the limit taken too
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        with caplog.at_level(logging.WARNING, logger="gateway.storage.store"):
            store.close()
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "could not hold off SQLite's checkpoint" in caplog.text
    assert db.read_bytes() == copied
    assert side(db, "-wal.overwritten").stat().st_size > 0 and not side(db, "-wal").exists()
    with pytest.raises(StorageError) as held:  # the .lock stays held while the writer is kept open
        ReportStore(db, gateway_id="gw-test")
    assert held.value.reason == "in_use"
    # read by another process: this one's SQLite still has the kept writer's files open
    done = subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print("
                           "c.execute('PRAGMA integrity_check').fetchone()[0], c.execute('SELECT COUNT(*) FROM reports')"
                           ".fetchone()[0])", str(db)], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["ok", "600"]


def test_another_connection_writing_the_running_store_stops_every_write(tmp_path: Path) -> None:
    """L3, fails before: an operator's sqlite3 writing the running store (a .restore, a DELETE) was not seen
    until a checkpoint changed the main file, and the gateway went on committing on its own view of it (replay
    window, chain head). Its write went through SQLite's locks: the stop checkpoints as usual, nothing aside."""
    db, store, bk, top = store_with_backup(tmp_path, first=30, then=10)
    other = sqlite3.connect(str(db))
    try:
        other.execute("DELETE FROM reports WHERE seq > 35")
        other.commit()
    finally:
        other.close()
    problem = store.check_file()
    assert problem is not None and "written by another program" in problem
    with pytest.raises(StorageError) as err:
        store.insert_batch([rec(top + 1)])
    assert err.value.reason == "file_gone"
    store.close()
    assert not side(db, "-wal.overwritten").exists() and not side(db, "-wal").exists()
    assert seqs(db) == (35, 35) and integrity(db) == "ok"
    ReportStore(db, gateway_id="gw-test").close()  # starts: nothing to decide


def test_the_stores_own_other_connections_are_no_foreign_writes(tmp_path: Path) -> None:
    """The web layer's reads, a backup and a retention pass never count as another program's write."""
    config = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    try:
        for seq in range(1, 50):
            store.insert_batch([rec(seq)])
        reader = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True)
        reader.execute("SELECT COUNT(*) FROM reports").fetchone()
        reader.close()
        done = subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "backup", str(tmp_path / "bk"),
                               "--config", str(config)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        store.apply_retention({("bin", "pad"): 1}, now=T0 + 400 * 86400.0)
        assert store.check_file() is None
        store.insert_batch([rec(50)])
    finally:
        store.close()
    shutil.rmtree(tmp_path / "bk")
