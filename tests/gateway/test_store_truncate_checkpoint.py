"""Another program's ``wal_checkpoint(TRUNCATE)`` (or RESTART) on the running store is a checkpoint, not a write.

``sqlite3 reports.sqlite "PRAGMA wal_checkpoint(TRUNCATE)"`` copies the log into the main file and starts the
log over itself, which moves the writer's ``PRAGMA data_version`` as another connection's commit would: it was
taken for one (store_gone 'written by another program', every write refused until a restart). The -shm's count
of commits (``iChange``) tells them apart: a commit moves it, starting the log over does not. A commit of another
program, before or after such a checkpoint, is still another program's write. Real store, real SQLite in another
process (and, to land between the store's COMMIT and its look at the log, in this one).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from gateway.errors import StorageError
from gateway.storage import ReportStore
from gateway.storage.store import CHECKPOINT_FRAMES

from test_store_foreign_checkpoint import HARMLESS, external, open_store
from test_store_overwrite_races import integrity, rec, seqs, side

pytestmark = pytest.mark.timeout(180)
RESTARTED = "another program started its -wal over"
FOREIGN = "written by another program"

# Checkpoints of another process, in a loop, until told to stop (a line on stdin) or `n` are done; prints
# the (busy, log frames, frames moved) of each mode as one line of JSON at the end.
_LOOP = r"""
import json, select, sqlite3, sys, time
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db, timeout=10)
done = {"TRUNCATE": [], "RESTART": []}
print("ready", flush=True)
for i in range(n):
    mode = "RESTART" if i % 3 == 2 else "TRUNCATE"
    done[mode].append(c.execute("PRAGMA wal_checkpoint(%s)" % mode).fetchone())
    if select.select([sys.stdin], [], [], 0.004)[0]:
        break
c.close()
print(json.dumps(done), flush=True)
"""


def wal_size(db: Path) -> int:
    return side(db, "-wal").stat().st_size


def test_a_truncate_checkpoint_is_harmless(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Fails before: store_gone 'written by another program' after the first TRUNCATE."""
    db, store = open_store(tmp_path, 200)
    try:
        with caplog.at_level(logging.INFO, logger="gateway.storage.store"):
            before = db.stat().st_size
            assert wal_size(db) > 0
            external(db, "PRAGMA wal_checkpoint(TRUNCATE)")
            assert wal_size(db) == 0 and db.stat().st_size > before  # the log is in the main file, and cut to 0
            assert store.check_file() is None
            for seq in range(201, 1400):  # past CHECKPOINT_FRAMES: the store's own checkpoints go on
                store.insert_batch([rec(seq)])
            external(db, "PRAGMA wal_checkpoint(TRUNCATE)")  # again, in a later log, found by the next write
            store.insert_batch([rec(1400)])
            assert store.check_file() is None and not store.file_gone
        assert caplog.text.count(RESTARTED) == 2 and caplog.text.count(HARMLESS) == 2
        assert FOREIGN not in caplog.text and "overwritten in place" not in caplog.text
    finally:
        store.close()
    assert not side(db, "-wal.overwritten").exists() and not side(db, "-wal").exists()
    assert integrity(db) == "ok" and seqs(db) == (1400, 1400)


def test_a_truncate_of_a_log_already_checkpointed_is_harmless(tmp_path: Path) -> None:
    """Nothing to copy (the store's own checkpoint moved it all): the main file is not written, the log is
    started over all the same, and data_version moves."""
    db, store = open_store(tmp_path, 50)
    try:
        store._checkpoint()  # a whole one: nothing left for the other program's
        stamp = db.stat().st_mtime_ns
        external(db, "PRAGMA wal_checkpoint(TRUNCATE)")
        assert db.stat().st_mtime_ns == stamp and wal_size(db) == 0
        assert store.check_file() is None
        store.insert_batch([rec(51)])
        external(db, "PRAGMA wal_checkpoint(TRUNCATE)")
        external(db, "PRAGMA wal_checkpoint(TRUNCATE)")  # twice before the store looks
        store.save_floors({"bin-1": 51})
        assert store.check_file() is None and store.ack_floors() == {"bin-1": 51}
    finally:
        store.close()
    assert integrity(db) == "ok" and seqs(db) == (51, 51)


@pytest.mark.parametrize("sql", ["DELETE FROM reports WHERE seq > 190",
                                 "INSERT INTO counters (name, value) VALUES ('x', 1)"])
def test_a_commit_before_a_truncate_is_still_another_programs_write(tmp_path: Path, sql: str) -> None:
    """The log started over after another program's commit looks as after a TRUNCATE alone; its count of
    commits does not: still store_gone, and the stop checkpoints as usual (the write went through SQLite)."""
    db, store = open_store(tmp_path, 200)
    try:
        code = ("import sqlite3,sys; c=sqlite3.connect(sys.argv[1], isolation_level=None); c.execute(sys.argv[2]);"
                " print(c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchall()); c.close()")
        subprocess.run([sys.executable, "-c", code, str(db), sql], check=True, timeout=60)
        assert wal_size(db) == 0
        problem = store.check_file()
        assert problem is not None and FOREIGN in problem
        with pytest.raises(StorageError) as err:
            store.insert_batch([rec(201)])
        assert err.value.reason == "file_gone"
    finally:
        store.close()
    assert not side(db, "-wal.overwritten").exists() and not side(db, "-wal").exists()
    assert integrity(db) == "ok"


def test_a_commit_and_truncate_found_by_the_next_write_refuse_it(tmp_path: Path) -> None:
    """Found inside the store's own transaction (not a watch first): the batch is not committed."""
    db, store = open_store(tmp_path, 100)
    code = ("import sqlite3,sys; c=sqlite3.connect(sys.argv[1], isolation_level=None);"
            " c.execute(\"INSERT INTO counters (name, value) VALUES ('z', 1)\");"
            " c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.close()")
    try:
        subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=60)
        with pytest.raises(StorageError) as err:
            store.insert_batch([rec(101)])
        assert err.value.reason == "file_gone" and FOREIGN in str(err.value)
    finally:
        store.close()
    assert seqs(db) == (100, 100)


def _inject_after_commit(store: ReportStore, act: Callable[[], Any]) -> list[int]:
    """Run ``act`` right after the store's next COMMIT, before the store looks at the log (the window a
    checkpoint of another program waiting for the write lock lands in)."""
    done: list[int] = []
    own = store._committed

    def committed(before: int | None, wrote: bool) -> None:
        if not done:
            act()
            done.append(1)
        own(before, wrote)

    store._committed = committed  # type: ignore[method-assign]
    return done


def _other(db: Path, *sql: str) -> None:
    """Another connection of this process runs ``sql`` (an autocommit each)."""
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=10)
    try:
        for s in sql:
            conn.execute(s).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("write", ["insert", "nothing"])
def test_a_truncate_right_after_the_stores_commit_is_harmless(tmp_path: Path, write: str) -> None:
    """Between the COMMIT and the store's look at the log: the count is taken from before the COMMIT (one more
    when the transaction changed rows)."""
    db, store = open_store(tmp_path, 100)
    try:
        done = _inject_after_commit(store, lambda: _other(db, "PRAGMA wal_checkpoint(TRUNCATE)"))
        if write == "insert":
            store.insert_batch([rec(101)])
        else:
            store.outbox_delete([424242])  # a transaction that removes nothing: its COMMIT writes no frame
        assert done and wal_size(db) == 0
        assert store.check_file() is None
        store.insert_batch([rec(102)])
        assert store.check_file() is None
    finally:
        store.close()
    assert integrity(db) == "ok"
    assert seqs(db) == ((101, 102) if write == "nothing" else (102, 102))


@pytest.mark.parametrize("write", ["insert", "nothing"])
def test_a_commit_right_after_the_stores_commit_is_still_found(tmp_path: Path, write: str) -> None:
    """Another program's commit in that window (and a TRUNCATE after it) is still its write."""
    db, store = open_store(tmp_path, 100)
    try:
        _inject_after_commit(store, lambda: _other(
            db, "INSERT INTO counters (name, value) VALUES ('w', 1)", "PRAGMA wal_checkpoint(TRUNCATE)"))
        if write == "insert":
            store.insert_batch([rec(101)])
        else:
            store.outbox_delete([424242])
        problem = store.check_file()
        assert problem is not None and FOREIGN in problem
    finally:
        store.close()


def test_truncate_checkpoints_while_the_store_writes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The task's case: another process checkpoints the running store in a loop (TRUNCATE, and RESTART) while
    the store commits batch after batch and looks at its file as the gateway's watch does: nothing is refused,
    nothing is lost, and the stop leaves one whole file."""
    db, store = open_store(tmp_path, 10)
    loop = subprocess.Popen([sys.executable, "-c", _LOOP, str(db), "30"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    seq = 10
    try:
        assert loop.stdout is not None and loop.stdin is not None
        assert loop.stdout.readline().strip() == "ready"
        with caplog.at_level(logging.INFO, logger="gateway.storage.store"):
            while loop.poll() is None and seq < 40000:
                batch = [rec(s) for s in range(seq + 1, seq + 5)]
                result = store.insert_batch(batch, floors={"bin-1": seq})
                assert len(result.inserted) == 4
                seq += 4
                if seq % 40 == 2:
                    assert store.check_file() is None
                    time.sleep(0.002)  # a pause between batches, as ingest has: the checkpoints get the lock sooner
            out, _ = loop.communicate("stop\n", timeout=60)
            assert loop.returncode == 0
            assert store.check_file() is None and not store.file_gone
        done = json.loads(out)
        truncated = [r for r in done["TRUNCATE"] if r[0] == 0]
        assert len(truncated) >= 10  # the loop did checkpoint the store under the writes, many times over
        assert caplog.text.count(RESTARTED) >= 3
        assert FOREIGN not in caplog.text and "overwritten in place" not in caplog.text
        assert store.max_seqs() == {"bin-1": seq} and store.ack_floors() == {"bin-1": seq - 4}
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
        store.close()
    assert not side(db, "-wal.overwritten").exists() and not side(db, "-wal").exists()
    assert integrity(db) == "ok" and seqs(db) == (seq, seq)
    assert seq > CHECKPOINT_FRAMES // 10  # enough commits for the store's own checkpoints to run among them
