"""A store file deleted under a running gateway.

Review finding (a1e3392): the ERROR gave ``cp /proc/<pid>/fd/<n>`` commands for the file and its -wal and said
the gateway commits nothing more, but only storing reports checked the file: meta rows (retention state),
outbox removals (every MQTT publish), retention batches and ACK floors still committed, and their commits
could auto-checkpoint into the deleted file, so the two copies could be torn. Now every write is refused once
the file is found gone and checkpoints are off; and the gateway copies the file itself, consistently, through
its own connection (``<path>.salvaged``), falling back to the ``cp`` commands when it cannot (no room).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import sqlite3
import stat
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from conftest import make_env

from gateway.config import load_config
from gateway.errors import StorageError
from gateway.service import Gateway
from gateway.storage import ReportRecord, ReportStore, salvage

T0 = 1_700_000_100 - (1_700_000_100 % 3600)


def rec(seq: int, device: str = "b1") -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind="bin", zone="north", type="win", w=T0 + 900 * seq, l=900,
                        m={"fill": 40}, e={}, a=[], fw="1.0", received_at=T0 + 900 * seq + 5.0,
                        link="serial:/dev/x", digest="%064x" % seq)


def filled(db: Path) -> ReportStore:
    """A store with reports 1..30 of b1, committed one by one (the last commits are in its -wal only) and
    queued for MQTT."""
    store = ReportStore(db, gateway_id="gw1", outbox_encoder=lambda r: ("t/%d" % r.seq, b"x" * 40))
    for seq in range(1, 31):
        store.insert_batch([rec(seq)])
    return store


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seqs(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        return [s for (s,) in conn.execute("SELECT seq FROM reports ORDER BY seq")]
    finally:
        conn.close()


WRITES: dict[str, Callable[[ReportStore], None]] = {
    "save_meta": lambda s: s.save_meta("retention_clock", '{"hold": null}'),
    "outbox_delete": lambda s: s.outbox_delete([m.id for m in s.outbox_peek(5)] or [1, 2, 3, 4, 5]),
    "save_floors": lambda s: s.save_floors({"b1": 30}),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_no_write_commits_once_the_file_is_deleted(tmp_path: Path, write: str) -> None:
    """The reviewer's case: save_meta (and every MQTT publish's outbox removal, the ACK floors) still
    committed into the deleted file and grew its -wal."""
    store = filled(tmp_path / "r.sqlite")
    try:
        (tmp_path / "r.sqlite").unlink()
        wal = tmp_path / "r.sqlite-wal"
        before = digest(wal)
        with pytest.raises(StorageError) as info:
            WRITES[write](store)
        assert info.value.reason == "file_gone" and "was deleted" in str(info.value), str(info.value)
        assert digest(wal) == before  # nothing committed, nothing checkpointed
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert store.outbox_depth == 30
        for again in sorted(WRITES):  # and it stays so, for every write
            with pytest.raises(StorageError) as info:
                WRITES[again](store)
            assert info.value.reason == "file_gone"
        with pytest.raises(StorageError) as info:
            store.insert_batch([rec(31)])
        assert info.value.reason == "file_gone"
        assert digest(wal) == before
        assert store.outbox_peek(5) == []  # not published again and again while removals are refused
    finally:
        store.close()


@pytest.mark.parametrize("removed", [("r.sqlite", "r.sqlite-wal", "r.sqlite-shm"), ("r.sqlite",)])
def test_the_gateway_salvages_a_deleted_store_whole_and_it_can_be_moved_into_place(
        tmp_path: Path, removed: tuple[str, ...]) -> None:
    db = tmp_path / "r.sqlite"
    (tmp_path / "r.sqlite.salvaged").write_text("an earlier salvage: never overwritten")
    store = filled(db)
    try:
        for name in removed:
            (tmp_path / name).unlink()
        problem = store.check_file() or ""
        copy = tmp_path / "r.sqlite.salvaged-2"
        assert "was deleted" in problem and "copied it, as of its last commit, to %s (30 reports" % copy in problem, \
            problem
        assert store.file_problem() == problem  # /healthz says the same
        move = re.search(r"\(mv -T -n (\S+) (\S+)\)", problem)
        assert move is not None and move.groups() == (str(copy), str(db)), problem
        st = copy.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        assert (tmp_path / "r.sqlite.salvaged").read_text() == "an earlier salvage: never overwritten"
        assert not list(tmp_path.glob("*.tmp*"))
        assert seqs(copy) == list(range(1, 31))
        with pytest.raises(StorageError):
            store.insert_batch([rec(31)])
    finally:
        store.close()
    # what the message says: stop, move aside what is left at the store's names, move the copy in, start
    for name in ("r.sqlite", "r.sqlite-wal", "r.sqlite-shm"):
        if (tmp_path / name).exists():
            (tmp_path / name).rename(tmp_path / (name + ".aside"))
    subprocess.run(["mv", str(copy), str(db)], check=True)
    again = ReportStore(db, gateway_id="gw1")
    try:
        assert again.max_seqs() == {"b1": 30}
        assert again.outbox_depth == 30  # undelivered messages are still sent after the restart
        assert again.insert_batch([rec(31)]).inserted == [("b1", 31)]  # the provenance chain goes on
    finally:
        again.close()
    assert seqs(db) == list(range(1, 32))


def test_without_room_for_the_copy_the_message_gives_cp_commands_that_stay_consistent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(salvage, "free_bytes", lambda _path: 3_000_000)
    db = tmp_path / "r.sqlite"
    store = filled(db)
    try:
        db.unlink()
        problem = store.check_file() or ""
        assert "the gateway could not copy it itself: 3 MB free on the file system of %s" % tmp_path in problem, \
            problem
        assert not list(tmp_path.glob("r.sqlite.salvaged*"))
        found = re.search(r"as its user or root: (.*?); then stop the gateway", problem)
        assert found is not None, problem
        parts = found.group(1).split(" && ")  # each cp after the check that its descriptor is still the file
        commands = [" && ".join(parts[i:i + 2]) for i in range(0, len(parts), 2)]
        assert len(commands) == 2 and all(
            c.startswith('test "$(readlink /proc/%d/fd/' % os.getpid())
            and " && cp -n --preserve=mode,ownership /proc/%d/fd/" % os.getpid() in c for c in commands), commands
        # the reviewer's race: writes between the two copies (a retention meta row, an MQTT publish)
        subprocess.run(commands[0], shell=True, check=True)
        for write in sorted(WRITES):
            with pytest.raises(StorageError):
                WRITES[write](store)
        subprocess.run(commands[1], shell=True, check=True)
        copy = tmp_path / "r.sqlite.salvaged"
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "r.sqlite.salvaged-wal").stat().st_mode) == 0o600
        assert seqs(copy) == list(range(1, 31))
        # space freed: the next check makes the copy after all, under a name not taken
        monkeypatch.setattr(salvage, "free_bytes", lambda _path: 10**12)
        later = store.check_file() or ""
        assert "copied it, as of its last commit, to %s.salvaged-2 (30 reports" % db in later, later
        assert seqs(tmp_path / "r.sqlite.salvaged-2") == list(range(1, 31))
    finally:
        store.close()


@pytest.mark.timeout(60)
async def test_a_running_gateway_salvages_its_deleted_store_and_starts_on_the_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from gateway import service

    monkeypatch.setattr(service, "STORE_WATCH_S", 0.05)
    config = load_config(make_env(tmp_path))
    db = tmp_path / "data" / "reports.sqlite"
    gw = Gateway(config)
    await gw.start()
    try:
        for seq in range(1, 21):  # on the store's thread, as ingest commits
            await gw.ingest.run_in_store(gw.store.insert_batch, [rec(seq, "bin-1")])
        for path in (tmp_path / "data").glob("reports.sqlite*"):
            path.unlink()
        for _ in range(200):
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            if errors:
                break
            await asyncio.sleep(0.05)
        assert len(errors) == 1 and "%s.salvaged (20 reports" % db in errors[0], errors
        assert gw.metrics.value("civicedge_store_gone") == 1
    finally:
        await gw.stop()
    assert not db.exists()
    (tmp_path / "data" / "reports.sqlite.salvaged").rename(db)
    gw = Gateway(config)
    await gw.start()
    try:
        found = await gw.ingest.run_in_store(gw.store.max_seqs)
        assert found == {"bin-1": 20}
        assert gw.store.file_problem() is None and not [p for p in gw.health() if p.code == "store_gone"]
    finally:
        await gw.stop()
