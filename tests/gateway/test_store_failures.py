"""The report store failing under a running gateway: damaged file, full disk, file deleted or replaced."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
import pytest
from conftest import KEYS, make_env
from helpers import report_frame
from procs import PtyDevice

from gateway.config import load_config
from gateway.errors import StorageError
from gateway.service import Gateway
from gateway.storage import ReportRecord, ReportStore
from gateway.storage.store import BatchResult
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


async def _wait(predicate: Callable[[], bool], what: str, dev: PtyDevice | None = None, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, what
        if dev is not None:
            await asyncio.to_thread(dev.pump, 0.05)
        else:
            await asyncio.sleep(0.05)


async def _health(gw: Gateway) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get("http://127.0.0.1:%d/healthz" % gw.http_port) as resp:
            return resp.status, await resp.json()


async def pump_until(dev: PtyDevice, device: str, seq: int) -> None:
    await _wait(lambda: dev.acks.get(device, 0) >= seq, "no ACK %s %d: %r" % (device, seq, dev.acks), dev)


def _http_env(tmp_path: Path, dev: PtyDevice) -> Path:
    cfg = make_env(tmp_path, serial=(dev.path,))
    cfg.write_text(cfg.read_text().replace("[http]\nenabled = false", "[http]\nport = 0"))
    return cfg


@pytest.mark.timeout(60)
async def test_failing_commits_are_counted_degrade_health_and_are_logged_once_per_burst(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A full disk: every batch fails (not acknowledged, correctly), but /healthz said ok, no metric
    counted it and each batch logged an ERROR line (465 lines in 25 s)."""
    caplog.set_level(logging.INFO)
    dev = PtyDevice(KEYS)
    gw = Gateway(load_config(_http_env(tmp_path, dev)))
    await gw.start()
    try:
        await _wait(lambda: gw.metrics.value("civicedge_link_state", {"link": "serial:%s" % dev.path}) == 1, "link")
        real = gw.store.insert_batch
        full = True

        def insert(records: list[ReportRecord], floors: dict[str, int] | None = None) -> BatchResult:
            if full:
                raise StorageError("storing %d reports failed: database or disk is full" % len(records),
                                   reason="write_failed")
            return real(records, floors)

        monkeypatch.setattr(gw.store, "insert_batch", insert)
        failures = "civicedge_store_commit_failures_total"
        for seq in range(1, 6):  # one batch each
            dev.send([report_frame("bin-1", seq, KEYS["bin-1"])])
            await _wait(lambda: gw.metrics.value(failures) == seq, "failure %d" % seq, dev)
        status, health = await _health(gw)
        assert status == 503 and health["status"] == "degraded"
        assert any("report store commits failing (5 in a row" in r and "disk is full" in r for r in health["reasons"])
        assert dev.acks.get("bin-1", 0) == 0
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and errors[0].startswith("commit of 1 report(s) failed"), errors
        assert gw.ingest is not None
        monkeypatch.setattr(gw.ingest._fail_log, "every_s", 0.0)  # the next line is due
        dev.send([report_frame("bin-1", 6, KEYS["bin-1"])])
        await _wait(lambda: gw.metrics.value(failures) == 6, "failure 6", dev)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2 and "(4 more failed commit(s) since the last such line)" in errors[1], errors

        full = False  # space freed: the device's re-sends are stored and acknowledged
        dev.send([report_frame("bin-1", seq, KEYS["bin-1"]) for seq in range(1, 7)])
        await pump_until(dev, "bin-1", 6)
        assert "report store commits succeed again, after 6 failed commit(s)" in caplog.text
        status, health = await _health(gw)
        assert status == 200 and health["status"] == "ok", health
        assert gw.metrics.value(failures) == 6
    finally:
        await gw.stop()
        dev.close()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_store_whose_file_is_deleted_or_replaced_fails_its_commits(tmp_path: Path, how: str) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw1")
    try:
        store.insert_batch([rec("b1", 1)])
        assert store.file_problem() is None
        if how == "deleted":
            for name in ("r.sqlite", "r.sqlite-wal", "r.sqlite-shm"):
                (tmp_path / name).unlink()
        else:
            other = tmp_path / "other.sqlite"
            ReportStore(other, gateway_id="gw1").close()
            os.replace(other, db)
        assert how in (store.file_problem() or "") and str(db) in (store.file_problem() or "")
        with pytest.raises(StorageError) as info:
            store.insert_batch([rec("b1", 2)])
        assert info.value.reason == "file_gone" and how in str(info.value)
    finally:
        store.close()


def test_a_store_whose_wal_alone_is_deleted_fails_its_commits(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw1")
    try:
        store.insert_batch([rec("b1", 1)])
        (tmp_path / "r.sqlite-wal").unlink()  # it held that commit: not in r.sqlite until a checkpoint
        with pytest.raises(StorageError) as info:
            store.insert_batch([rec("b1", 2)])
        assert info.value.reason == "file_gone" and "r.sqlite-wal was deleted" in str(info.value)
    finally:
        store.close()


@pytest.mark.timeout(60)
async def test_deleting_the_store_under_a_running_gateway_stops_acks_logs_and_degrades_health(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """rm data/reports.sqlite*: ACKs went on into the deleted file, /healthz said ok, nothing was logged."""
    from gateway import service

    monkeypatch.setattr(service, "STORE_WATCH_S", 0.05)
    dev = PtyDevice(KEYS)
    gw = Gateway(load_config(_http_env(tmp_path, dev)))
    await gw.start()
    try:
        await _wait(lambda: gw.metrics.value("civicedge_link_state", {"link": "serial:%s" % dev.path}) == 1, "link")
        dev.send([report_frame("bin-1", seq, KEYS["bin-1"]) for seq in range(1, 4)])
        await pump_until(dev, "bin-1", 3)
        status, _ = await _health(gw)
        assert status == 200
        for path in (tmp_path / "data").glob("reports.sqlite*"):
            path.unlink()
        await _wait(lambda: any(r.levelno == logging.ERROR and "was deleted" in r.getMessage()
                                for r in caplog.records), "no ERROR without traffic")
        status, health = await _health(gw)
        assert status == 503 and any("reports.sqlite was deleted" in r for r in health["reasons"]), health
        dev.send([report_frame("bin-1", 4, KEYS["bin-1"])])
        await _wait(lambda: gw.metrics.value("civicedge_store_commit_failures_total") == 1, "commit failure", dev)
        await asyncio.to_thread(dev.pump, 0.3)
        assert dev.acks["bin-1"] == 3  # report 4 is not acknowledged: the device keeps it
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2 and "commit of 1 report(s) failed" in errors[1], errors
    finally:
        await gw.stop()
        dev.close()


def test_saving_ack_floors_on_a_full_disk_is_a_storage_error(tmp_path: Path) -> None:
    """Demo QA: at stop on a full disk, save_floors failed with 'cannot rollback - no transaction is
    active' (SQLite had rolled the transaction back itself) instead of the disk-full StorageError."""
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw")
    try:
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages}")  # a full disk, as far as SQLite can tell
        with pytest.raises(StorageError, match="disk is full") as info:
            store.save_floors({f"dev-{i:05d}": i for i in range(20000)})
        assert info.value.reason == "write_failed"
        store._conn.execute(f"PRAGMA max_page_count = {pages * 100}")  # space again: the store still works
        store.save_floors({"dev-1": 7})
        assert store.ack_floors() == {"dev-1": 7}
    finally:
        store.close()
