"""A store whose last commits are only in its ``-wal`` opens, and is judged together with it.

QA HIGH-1: after a gateway stopped on a full disk ("WAL not checkpointed at close: database or disk is
full") or was killed during a WAL checkpoint, ``gateway run`` and ``run --check`` refused the intact store
as ``open_failed`` ("database disk image is malformed ... restore the last backup"): the check read the
main file alone (``immutable=1``), which a checkpoint cut off part-way leaves half-written. Following the
advice lost every acknowledged report since the backup. LOW-5: damage found at start was ``open_failed``,
the docs say ``corrupt``. LOW-6: a store cut below one page was told to "give [storage] path ... a name
where none exists yet", steering the operator to an empty store.

The states are made for real: a child process holding the store commits with automatic checkpoints off
and dies (``os._exit``) with its commits in the ``-wal`` only; a child whose file-size limit stops the
checkpoint at close; a checkpoint cut off part-way is what SQLite leaves when it dies while copying the
``-wal``'s pages into the main file in ascending page order (:func:`cut_checkpoint` does that copy and
stops), as in /tmp/qa_ops/emu/mix.
"""

from __future__ import annotations

import os
import re
import sqlite3
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import make_env
from procs import GatewayProcess

from gateway.cli.run_check import check_store_file
from gateway.errors import StorageError
from gateway.storage import ReportStore
from gateway.storage.store_kind import STORE, store_kind

# A child that stores reports seq FIRST..LAST in the store at PATH with automatic checkpoints off, then
# dies holding it ("kill": os._exit, as a kill -9 or a power cut leaves it) or closes it after lowering
# its file-size limit to the main file's size plus a few pages ("full": the checkpoint at close fails
# part-way, as on a full disk). Python ignores SIGXFSZ, so the write fails with EFBIG instead.
WRITER = textwrap.dedent('''
    import logging, os, resource, sys
    from pathlib import Path
    from gateway.storage import ReportRecord, ReportStore
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    path, first, last, how = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    store = ReportStore(path, gateway_id="gw1")
    store._conn.execute("PRAGMA wal_autocheckpoint=0")
    for start in range(first, last + 1, 100):
        store.insert_batch([ReportRecord(
            device="b%d" % (s % 5), seq=s, kind="bin", zone="north", type="win", w=1_790_000_000 + 900 * s, l=900,
            m={"fill": 40, "temp": 12}, e={}, a=[], fw="1.0", received_at=1_790_000_000.0, link="serial:x",
            digest="%064x" % s) for s in range(start, min(start + 100, last + 1))])
    if how == "kill":
        os._exit(0)
    if how == "full":
        size = os.stat(path).st_size
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 64 * 4096, resource.RLIM_INFINITY))
    store.close()
    print("closed")
''')


def write(db: Path, first: int, last: int, how: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-c", WRITER, str(db), str(first), str(last), how],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    if how == "close":
        wal = db.with_name(db.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0, done.stderr  # checkpointed: the main file has all
    return done


def killed_with_commits_in_wal(db: Path, *, old: int, new: int) -> None:
    """A store with ``old`` reports checkpointed into its main file (a clean stop) and ``new`` more
    committed by a gateway killed before any checkpoint: those are in the ``-wal`` only."""
    write(db, 1, old, "close")  # an unlimited close: checkpointed, the main file holds them
    write(db, old + 1, old + new, "kill")
    wal = db.with_name(db.name + "-wal")
    assert wal.stat().st_size > 0


def cut_checkpoint(db: Path, share: float) -> None:
    """Copy the first ``share`` of the ``-wal``'s committed pages into the main file, in ascending page
    order, and stop: a checkpoint cut off part-way (SQLite's checkpoint copies in that order)."""
    wal = db.with_name(db.name + "-wal").read_bytes()
    _magic, _version, page_size, _seq, salt1, salt2 = struct.unpack(">6I", wal[:24])
    frame = 24 + page_size
    pages: dict[int, bytes] = {}
    pending: dict[int, bytes] = {}
    for off in range(32, len(wal) - frame + 1, frame):
        pgno, commit, s1, s2 = struct.unpack(">4I", wal[off:off + 16])
        if (s1, s2) != (salt1, salt2):  # the end of this WAL generation
            break
        pending[pgno] = wal[off + 24:off + frame]
        if commit:  # a commit frame: the transaction's pages are valid
            pages.update(pending)
            pending = {}
    order = sorted(pages)
    assert len(order) > 10
    with db.open("r+b") as fh:
        for pgno in order[:max(1, int(len(order) * share))]:
            fh.seek((pgno - 1) * page_size)
            fh.write(pages[pgno])


def main_file_alone_is_malformed(db: Path) -> bool:
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro&immutable=1", uri=True)
    try:
        conn.execute("SELECT COUNT(*) FROM meta").fetchone()
        conn.execute("PRAGMA quick_check").fetchall()
        return False
    except sqlite3.DatabaseError as exc:
        return "malformed" in str(exc)
    finally:
        conn.close()


def files(directory: Path) -> dict[str, bytes]:
    """Every file in ``directory`` (not below) with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def seqs_in_main_file(db: Path) -> list[int]:
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro&immutable=1", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return [int(s) for (s,) in conn.execute("SELECT seq FROM reports ORDER BY seq")]
    finally:
        conn.close()


def civicedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil.cli.main", *args], capture_output=True, text=True, timeout=60)


def test_a_killed_gateways_wal_is_read_without_a_trace_and_checkpointed_at_the_next_open(tmp_path: Path) -> None:
    """Commits only in the -wal (a kill -9, a power cut): run --check reads them and leaves nothing beside
    the store (it made a -shm before); the store's open checkpoints them into the main file at once."""
    config = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    killed_with_commits_in_wal(db, old=300, new=300)
    db.with_name("reports.sqlite-shm").unlink()  # a copy of the killed gateway's files: no -shm
    before = files(db.parent)
    checked = civicedge("gateway", "run", "--config", str(config), "--check")
    assert checked.returncode == 0, checked.stderr
    assert "store %s: readable, with commits in reports.sqlite-wal not yet in the main file" % db in checked.stdout
    assert files(db.parent) == before  # no -shm, nothing written
    assert len(seqs_in_main_file(db)) == 300  # the main file alone lacks the last 300
    store = ReportStore(db, gateway_id="gw1")
    try:
        assert sum(1 for _ in store._conn.execute("SELECT seq FROM reports")) == 600
        # checkpointed at open: the main file alone is whole again, the -wal empty
        assert seqs_in_main_file(db) == list(range(1, 601))
        assert db.with_name("reports.sqlite-wal").stat().st_size == 0
    finally:
        store.close()


@pytest.mark.parametrize("share", [0.1, 0.6])
def test_a_store_cut_off_mid_checkpoint_starts_with_every_report(tmp_path: Path, share: float) -> None:
    """The QA state (s1/data_midckpt_backup, emu/mix): the main file alone is malformed, the store with
    its -wal intact. run --check accepts it untouched; the gateway starts, and at its stop every report
    is in the main file."""
    config = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    killed_with_commits_in_wal(db, old=1500, new=1500)
    cut_checkpoint(db, share)
    assert main_file_alone_is_malformed(db)
    before = files(db.parent)
    checked = civicedge("gateway", "run", "--config", str(config), "--check")
    assert checked.returncode == 0, checked.stderr
    assert files(db.parent) == before  # the killed gateway's -shm included: nothing written
    assert store_kind(db) == STORE and files(db.parent) == before
    gw = GatewayProcess(config, tmp_path / "gw.log", verbose=1)
    try:
        gw.start()
        gw.wait_log("is checkpointed into it (the file is whole again)")
        assert gw.terminate() == 0, gw.logs()
    finally:
        gw.kill()
    assert "not checkpointed" not in gw.logs()
    assert seqs_in_main_file(db) == list(range(1, 3001))  # every report, in the main file alone
    left = set(os.listdir(db.parent))
    assert {"reports.sqlite", "reports.sqlite.lock", "registry"} <= left
    assert "reports.sqlite-wal" not in left or db.with_name("reports.sqlite-wal").stat().st_size == 0


def test_a_full_disk_at_close_says_the_wal_holds_reports_and_the_next_start_has_them(tmp_path: Path) -> None:
    """The checkpoint at close fails part-way (here the file-size limit, as a full disk): the WARNING says
    the -wal holds committed reports and a backup copies both files; the half-written main file alone is
    malformed, and the next open reads and checkpoints everything."""
    db = tmp_path / "reports.sqlite"
    write(db, 1, 1500, "close")
    done = write(db, 1501, 3000, "full")
    assert "closed" in done.stdout
    warning = [line for line in done.stderr.splitlines() if "WAL not checkpointed at close" in line]
    assert len(warning) == 1, done.stderr
    assert "committed reports stay in reports.sqlite-wal" in warning[0]
    assert "reports.sqlite alone is incomplete and may read as damaged" in warning[0]
    assert "back up both" in warning[0]
    assert main_file_alone_is_malformed(db)
    before = files(tmp_path)
    assert check_store_file(db, running=False) == "readable"
    assert files(tmp_path) == before
    ReportStore(db, gateway_id="gw1").close()
    assert seqs_in_main_file(db) == list(range(1, 3001))


FOREIGN = textwrap.dedent('''
    import os, sqlite3, sys
    conn = sqlite3.connect(sys.argv[1])
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE meta (k TEXT, v TEXT)")  # a meta table of its own: no schema_version
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.execute("INSERT INTO customers VALUES (1)")
    conn.commit()
    if sys.argv[2] == "checkpointed":
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("INSERT INTO customers VALUES (2)")
        conn.commit()
    os._exit(0)
''')


def test_a_foreign_database_with_a_wal_is_refused_untouched(tmp_path: Path) -> None:
    """Another program's WAL database killed with commits in its -wal (its tables there only, or in the
    main file too) is refused as not_a_store, by the store and by run --check, with no -shm, .lock or
    anything else created and no byte changed (a -shm was created before when the tables were in the
    -wal only)."""
    config = make_env(tmp_path)
    for state in ("tables_in_wal", "checkpointed"):
        foreign = tmp_path / state / "app.sqlite"
        foreign.parent.mkdir()
        subprocess.run([sys.executable, "-c", FOREIGN, str(foreign), state], check=True, timeout=60)
        foreign.with_name("app.sqlite-shm").unlink()
        assert foreign.with_name("app.sqlite-wal").stat().st_size > 0
        before = files(foreign.parent)
        with pytest.raises(StorageError) as opened:
            ReportStore(foreign, gateway_id="gw1")
        assert opened.value.reason == "not_a_store" and "customers" in str(opened.value), state
        with pytest.raises(StorageError) as checked:
            check_store_file(foreign, running=False)
        assert str(checked.value) == str(opened.value)
        config.write_text(re.sub(r"\[storage\]\n(path = .*\n)?", '[storage]\npath = "%s"\n' % foreign,
                                 config.read_text()))
        done = civicedge("gateway", "run", "--config", str(config), "--check")
        assert done.returncode == 1 and "error (not_a_store)" in done.stderr, (state, done.stderr)
        assert files(foreign.parent) == before, state


def test_an_empty_file_with_a_wal_is_refused_and_the_wal_kept(tmp_path: Path) -> None:
    """A 0-byte main file with a -wal holding pages (a copy cut off, a truncation) was taken as an empty
    store, and SQLite deletes the -wal of an empty database at its open, even a read-only one: refused,
    nothing removed."""
    db = tmp_path / "reports.sqlite"
    killed_with_commits_in_wal(db, old=10, new=50)
    db.write_bytes(b"")
    before = files(tmp_path)
    with pytest.raises(StorageError) as opened:
        ReportStore(db, gateway_id="gw1")
    # the gateway ran here (its .lock is beside the file): its store, damaged
    assert opened.value.reason == "corrupt"
    assert "is empty (0 bytes) but reports.sqlite-wal beside it holds pages" in str(opened.value)
    assert files(tmp_path) == before


def damage(db: Path, how: str) -> None:
    data = db.read_bytes()
    if how == "truncated_to_half":
        db.write_bytes(data[:len(data) // 2])
    elif how == "page_1_overwritten":  # the schema, after the 100-byte header
        db.write_bytes(data[:100] + b"\xa5" * 3996 + data[4096:])
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated_to_half", "page_1_overwritten"])
def test_a_damaged_store_is_corrupt_at_start_and_in_the_check(tmp_path: Path, how: str) -> None:
    """LOW-5: docs/gateway.md (Damaged file) says error (corrupt); it was open_failed. Same line from run
    and run --check, the file left as it is."""
    config = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    write(db, 1, 3000, "close")
    damage(db, how)
    before = files(db.parent)
    checked = civicedge("gateway", "run", "--config", str(config), "--check")
    done = civicedge("gateway", "run", "--config", str(config))
    assert done.returncode == 1 and checked.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == checked.stderr.strip().splitlines()[-1]
    assert last.startswith("error (corrupt): report store %s is damaged: SQLite: database disk image is malformed"
                           % db), last
    assert "restore the last backup (docs/gateway.md, Restoring a backup)" in last
    assert files(db.parent) == before


def test_an_io_error_stays_open_failed(tmp_path: Path) -> None:
    """Only damage is corrupt: a store SQLite cannot read for another reason is open_failed, without the
    backup advice (here a -wal that is a directory, so SQLite cannot open it)."""
    db = tmp_path / "reports.sqlite"
    write(db, 1, 100, "close")
    (tmp_path / "reports.sqlite-wal").mkdir()
    with pytest.raises(StorageError) as info:
        store_kind(db)
    assert info.value.reason == "open_failed"
    assert "nothing was changed" in str(info.value) and "backup" not in str(info.value)


@pytest.mark.parametrize("ran_here", [True, False])
def test_a_store_cut_below_one_page_is_not_sent_to_an_empty_store(tmp_path: Path, ran_here: bool) -> None:
    """LOW-6: the message told the operator to give [storage] path "a name where none exists yet": for the
    gateway's own store that starts empty, losing the replay window and ACK floors. It now says to
    restore the backup and what starting empty loses; with the gateway's .lock beside the file it says
    this is the gateway's store (reason corrupt), without it that it may be (open_failed, as for a
    text file named by mistake)."""
    db = tmp_path / "reports.sqlite"
    write(db, 1, 50, "close")
    if not ran_here:
        (tmp_path / "reports.sqlite.lock").unlink()
    db.write_bytes(db.read_bytes()[:300])
    with pytest.raises(StorageError) as info:
        ReportStore(db, gateway_id="gw1")
    text = str(info.value)
    assert "a name where none exists yet" not in text
    assert "300 byte(s), shorter than any SQLite database" in text
    assert "restore the last backup (docs/gateway.md, Restoring a backup)" in text
    assert ("only without a backup start on an empty store with it moved aside, which loses every stored report "
            "(devices re-send only those they still hold), the replay window") in text
    assert "ACK floors" in text
    if ran_here:
        assert info.value.reason == "corrupt"
        assert "A gateway has run on this path (reports.sqlite.lock is beside it): this is its report store" in text
    else:
        assert info.value.reason == "open_failed"
        assert "If this is the gateway's report store" in text and "names another file by mistake" in text
