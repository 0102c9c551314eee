"""A copy made over the running gateway's store file (same inode) is found: nothing more is committed.

DR drill H3: ``cp backup/reports.sqlite data/reports.sqlite`` over a running gateway's store kept the file (its
inode) and replaced its content; the replaced-file check (inodes) did not see it: no ERROR, /healthz ok, the
next checkpoint mixed the gateway's pages into the copy (index/table mismatch), and the next start said "sound".
The main file changes only at the gateway's own checkpoints (inside its commits), so a change between them is
another program writing it. Real store, real files, real backup command, real gateway service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import KEYS, make_env
from helpers import report_frame
from procs import PtyDevice

from gateway import service as service_mod
from gateway.config import load_config
from gateway.errors import StorageError
from gateway.service import Gateway
from gateway.storage import ReportRecord, ReportStore

pytestmark = pytest.mark.timeout(120)
T0 = 1_790_000_000


def rec(device: str, seq: int) -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind="bin", zone="north", type="win", w=T0 + 900 * seq, l=900,
                        m={"fill": 40, "temp": 12}, e={}, a=[], fw="1.0", received_at=T0 + 900 * seq + 5.0,
                        link="serial:x", digest="%064x" % seq)


def backup(config: Path, dest: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "backup", str(dest), "--config",
                           str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def integrity(db: Path) -> str:
    conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_checkpoints_retention_and_a_backup_are_never_taken_for_an_overwrite(tmp_path: Path) -> None:
    config = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    sizes = set()
    try:
        seq = 0
        for n in range(300):  # the -wal passes 1000 pages: SQLite checkpoints inside some of these commits
            store.insert_batch([rec("bin-%d" % (seq % 3), seq + i) for i in range(1, 6)])
            seq += 5
            store.save_floors({"bin-0": seq})
            assert store.check_file() is None, n
            sizes.add(db.stat().st_size)
            if n == 150:
                backup(config, tmp_path / "backup")  # online backup API: reads only
                assert store.check_file() is None
        assert len(sizes) > 1  # the main file was written by checkpoints meanwhile
        # retention removes temp (90 days) of every report: a pass of its own commits
        removed = store.apply_retention({("bin", "temp"): 90}, now=T0 + 200 * 86400.0)
        assert removed > 0
        assert store.check_file() is None and store.file_problem() is None
        store.insert_batch([rec("bin-1", seq + 1)])
    finally:
        store.close()
    assert not db.with_name(db.name + "-wal.overwritten").exists()
    assert integrity(db) == "ok"


def test_a_copy_over_the_open_store_stops_every_write_and_keeps_the_copy_unmixed(tmp_path: Path,
                                                                                 caplog: pytest.LogCaptureFixture
                                                                                 ) -> None:
    config = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    closed = False
    try:
        for seq in range(1, 11):
            store.insert_batch([rec("bin-1", seq)])
        backup(config, tmp_path / "backup")
        for seq in range(11, 400):  # past the backup, with checkpoints
            store.insert_batch([rec("bin-1", seq)])
        inode = db.stat().st_ino
        shutil.copyfile(tmp_path / "backup" / "reports.sqlite", db)  # what cp does: same file, new content
        assert db.stat().st_ino == inode
        copied = db.read_bytes()
        problem = store.check_file()
        assert problem is not None and "was overwritten in place" in problem and "cp" in problem, problem
        assert "Restoring a backup" in problem and store.file_gone
        assert store.file_problem() == problem
        with pytest.raises(StorageError) as err:
            store.insert_batch([rec("bin-1", 400)])
        assert err.value.reason == "file_gone"
        with pytest.raises(StorageError):
            store.save_floors({"bin-1": 400})
        with caplog.at_level(logging.WARNING, logger="gateway.storage.store"):
            store.close()
        closed = True
    finally:
        if not closed:
            store.close()
    # no checkpoint into the copy: it is exactly what was copied, its -wal and -shm kept aside
    assert db.read_bytes() == copied
    assert not db.with_name(db.name + "-wal").exists() and not db.with_name(db.name + "-shm").exists()
    assert db.with_name(db.name + "-wal.overwritten").stat().st_size > 0
    assert "closed without checkpointing" in caplog.text
    assert integrity(db) == "ok"
    with pytest.raises(StorageError) as refused:  # until the -wal/-shm set aside are dealt with
        ReportStore(db, gateway_id="gw-test")
    assert refused.value.reason == "overwritten_aside"
    advice = str(refused.value).split("move them out of the way: ")[1].split(" and start;")[0]
    subprocess.run(advice, shell=True, check=True)  # the copy is the restore the operator meant
    again = ReportStore(db, gateway_id="gw-test")  # the backup's 10 reports
    try:
        assert again.max_seqs() == {"bin-1": 10}
    finally:
        again.close()


def test_an_overwrite_found_at_a_commit_is_not_committed(tmp_path: Path) -> None:
    db = tmp_path / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    try:
        store.insert_batch([rec("bin-1", 1)])
        snapshot = tmp_path / "old.sqlite"
        src = sqlite3.connect(db)
        dst = sqlite3.connect(snapshot)
        src.backup(dst)
        src.close()
        dst.close()
        store.insert_batch([rec("bin-1", 2)])
        with open(db, "r+b") as f:  # written in place between two commits (no watch ran meanwhile)
            f.write(snapshot.read_bytes())
        with pytest.raises(StorageError) as err:
            store.insert_batch([rec("bin-1", 3)])
        assert err.value.reason == "file_gone" and "overwritten in place" in str(err.value)
    finally:
        store.close()


async def test_the_running_gateway_reports_a_cp_over_its_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(service_mod, "STORE_WATCH_S", 0.2)
    dev = PtyDevice(KEYS)
    config = make_env(tmp_path, serial=(dev.path,))
    config.write_text(config.read_text() + "[retention]\ninterval_s = 1\n")
    gw = Gateway(load_config(config))
    await gw.start()
    try:
        while gw.metrics.value("civicedge_link_state", {"link": "serial:%s" % dev.path}) != 1:
            await asyncio.sleep(0.05)

        async def acked(device: str, seq: int, timeout: float = 10.0) -> bool:
            end = time.monotonic() + timeout
            while dev.acks.get(device, 0) < seq:
                if time.monotonic() > end:
                    return False
                await asyncio.to_thread(dev.pump, 0.05)
            return True

        dev.send([report_frame("bin-1", s, KEYS["bin-1"]) for s in range(1, 4)])
        assert await acked("bin-1", 3)
        await asyncio.to_thread(backup, config, tmp_path / "backup")
        dev.send([report_frame("bin-1", s, KEYS["bin-1"]) for s in range(4, 7)])
        assert await acked("bin-1", 6)
        await asyncio.sleep(1.5)  # watches and retention passes of a normal run: no alarm
        assert not [p for p in gw.health() if p.code == "store_gone"]
        shutil.copyfile(tmp_path / "backup" / "reports.sqlite", gw.config.storage.path)
        end = time.monotonic() + 10
        while not [p for p in gw.health() if p.code == "store_gone"]:
            assert time.monotonic() < end, "the overwrite was not found"
            await asyncio.sleep(0.1)
        (found,) = [p for p in gw.health() if p.code == "store_gone"]
        assert "overwritten in place" in found and found.severity == "critical", found
        assert gw.metrics.value("civicedge_store_gone") == 1
        assert any(r.levelno == logging.ERROR and "overwritten in place" in r.getMessage() for r in caplog.records)
        dev.send([report_frame("bin-1", 7, KEYS["bin-1"])])
        assert not await acked("bin-1", 7, timeout=2.0)  # not committed, not acknowledged
    finally:
        await gw.stop()
        dev.close()
