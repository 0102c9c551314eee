"""A report store damaged on disk (QA MEDIUM-2, LOW-4) and a disk running out of space (LOW-8).

Damage is made the way a disk makes it: bytes of the file overwritten while no gateway runs.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
import pytest
from conftest import make_env

from gateway.config import load_config
from gateway.errors import ConfigError, StorageError
from gateway.service import Gateway
from gateway.storage import ReportRecord, ReportStore
from gateway.storage.damage import is_corrupt, quick_check, unclean_stop
from gateway.storage.queries import ReportQueries
from hil.cli.main import main

T0 = 1_700_000_100 - (1_700_000_100 % 3600)


def rec(device: str, seq: int) -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind="bin", zone="north", type="win", w=T0 + 900 * seq, l=900,
                        m={"fill": 40, "temp": 12}, e={}, a=[], fw="1.0", received_at=T0 + 900 * seq + 5.0,
                        link="serial:/dev/x", digest="%064x" % seq)


def filled_store(db: Path, n: int = 3000) -> None:
    store = ReportStore(db, gateway_id="gw1")
    for start in range(1, n + 1, 500):
        store.insert_batch([rec("bin-%d" % (s % 3 + 1), s) for s in range(start, min(start + 500, n + 1))])
    store.close()


def damage_a_reports_leaf(db: Path) -> None:
    """Overwrite one leaf page in the middle of the ``reports`` table: its rows are gone, while the file's
    header, the schema, the indexes (the replay window is read from one) and the chain read fine."""
    conn = sqlite3.connect(db)
    try:
        pages = [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'reports' AND pagetype = 'leaf'"
                                            " ORDER BY pageno")]
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat table to find a page of the reports table")
    finally:
        conn.close()
    page_size = 4096
    with db.open("r+b") as fh:
        fh.seek((pages[len(pages) // 2] - 1) * page_size)
        fh.write(b"\xa5" * page_size)


def _config(tmp_path: Path, storage: str = "") -> Path:
    cfg = make_env(tmp_path)
    text = cfg.read_text().replace("[http]\nenabled = false", "[http]\nport = 0")
    cfg.write_text(text.replace("[storage]\n", "[storage]\n" + storage))
    return cfg


async def _wait(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.05)


async def _get(gw: Gateway, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get("http://127.0.0.1:%d%s" % (gw.http_port, path)) as resp:
            return resp.status, await (resp.json() if path != "/metrics" else resp.text())


def test_a_read_meeting_damage_is_corrupt_with_sqlites_words_not_read_failed(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    filled_store(db)
    damage_a_reports_leaf(db)
    q = ReportQueries(db)
    try:
        with pytest.raises(StorageError) as info:
            q.devices()
        assert info.value.reason == "corrupt"
        assert info.value.sqlite == "database disk image is malformed (SQLITE_CORRUPT)"
        assert str(db) in str(info.value) and "Damaged file" in str(info.value)
        assert q.damage.problem == str(info.value)
    finally:
        q.close()


def test_a_file_that_is_no_longer_a_database_counts_as_damaged(tmp_path: Path) -> None:
    """SQLITE_NOTADB (the header overwritten) is damage too, as SQLITE_CORRUPT is; a busy error is not."""
    db = tmp_path / "r.sqlite"
    filled_store(db, n=10)
    with db.open("r+b") as fh:
        fh.write(b"\x5a" * 100)
    with pytest.raises(sqlite3.DatabaseError) as info:
        sqlite3.connect(db).execute("SELECT 1 FROM reports")
    assert is_corrupt(info.value)
    with pytest.raises(StorageError) as err:
        ReportQueries(db)
    assert err.value.reason == "corrupt" and err.value.sqlite == "file is not a database (SQLITE_NOTADB)"
    other = tmp_path / "other.sqlite"
    holder = sqlite3.connect(other, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError) as busy:
            sqlite3.connect(other, timeout=0).execute("SELECT * FROM t")
        assert busy.value.sqlite_errorcode == sqlite3.SQLITE_BUSY and not is_corrupt(busy.value)
    finally:
        holder.close()


def test_an_unclean_stop_is_told_by_the_wal_it_leaves(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw1")
    store.insert_batch([rec("bin-1", 1)])
    assert unclean_stop(db)  # a killed gateway's store looks so: its commits are in the -wal
    store.close()
    assert not unclean_stop(db)
    assert quick_check(db) == []


@pytest.mark.timeout(60)
async def test_a_store_damaged_mid_file_degrades_health_stops_commits_and_says_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """QA MEDIUM-2: such a store was accepted: reports ACKed, /healthz ok, reads failing 'read_failed'."""
    caplog.set_level(logging.INFO)
    cfg = _config(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    filled_store(db)
    damage_a_reports_leaf(db)
    gw = Gateway(load_config(cfg))
    await gw.start()  # the damage is not in what the start reads
    try:
        # Found by the start-up quick_check, or by a read that met it first (retention, /healthz's count).
        await _wait(lambda: gw.store.damage.problem is not None, "the damage is found")
        status, health = await _get(gw, "/healthz")
        assert status == 503 and health["status"] == "degraded"
        [reason] = [r for r in health["reasons"] if r.startswith("report store damaged")]
        assert "is damaged" in reason and "docs/gateway.md, Damaged file" in reason and str(db) in reason
        _, metrics = await _get(gw, "/metrics")
        assert "civicedge_store_damaged 1.0" in metrics
        await _wait(lambda: any(r.levelno == logging.ERROR and "is damaged" in r.getMessage()
                                for r in caplog.records), "ERROR logged")
        # Nothing more is committed (so nothing acknowledged): the devices keep their reports.
        with pytest.raises(StorageError) as info:
            await gw.ingest.run_in_store(gw.store.insert_batch, [rec("bin-1", 5000)])
        assert info.value.reason == "corrupt"
        # A read meeting the damage fails 'corrupt', and its log line has SQLite's words.
        status, body = await _get(gw, "/api/devices")
        assert status == 503 and body["error"]["message"] == "gateway backend unavailable (corrupt)"
        assert "StorageError (corrupt: SQLite: database disk image is malformed (SQLITE_CORRUPT))" in caplog.text
    finally:
        await gw.stop()
    errors = [r.getMessage() for r in caplog.records
              if r.levelno == logging.ERROR and r.getMessage().startswith("report store") and "is damaged" in r.getMessage()]
    assert len(errors) == 1, errors  # said once, not per request or commit


@pytest.mark.timeout(60)
async def test_a_sound_store_is_checked_at_start_and_stays_healthy(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    db = tmp_path / "data" / "reports.sqlite"
    cfg = _config(tmp_path)
    elsewhere = tmp_path / "running.sqlite"
    store = ReportStore(elsewhere, gateway_id="gw1")
    store.insert_batch([rec("bin-1", 1)])
    # The files as a gateway killed now leaves them: the commit in the -wal, not checkpointed.
    shutil.copyfile(elsewhere, db)
    shutil.copyfile(tmp_path / "running.sqlite-wal", tmp_path / "data" / "reports.sqlite-wal")
    store.close()
    gw = Gateway(load_config(cfg))
    await gw.start()
    try:
        await _wait(lambda: "checked after an unclean stop (a -wal was left): sound" in caplog.text, "check logged")
        _, health = await _get(gw, "/healthz")  # (degraded by retention: these reports are from 2023)
        assert not [r for r in health["reasons"] if r.startswith("report store")], health
        _, metrics = await _get(gw, "/metrics")
        assert "civicedge_store_damaged 0.0" in metrics
    finally:
        await gw.stop()


def test_the_docs_recipe_recovers_the_readable_rows_into_a_store_the_gateway_opens(tmp_path: Path) -> None:
    """docs/gateway.md, Damaged file: sqlite3 .dump (Debian's sqlite3 has no .recover) into a new file."""
    if shutil.which("sqlite3") is None:
        pytest.skip("no sqlite3 command-line shell")
    db = tmp_path / "reports.sqlite"
    filled_store(db)
    damage_a_reports_leaf(db)
    readable = _readable_rows(db)
    assert 0 < len(readable) < 3000
    new = tmp_path / "recovered.sqlite"
    # The recipe, as documented.
    subprocess.run("sqlite3 %s .dump | sed 's/^ROLLBACK; -- due to errors$/COMMIT;/' | sqlite3 %s" % (db, new),
                   shell=True, check=True)
    assert quick_check(new) == []
    store = ReportStore(new, gateway_id="gw1")
    try:
        assert store.insert_batch([rec("bin-1", 5000)]).inserted == [("bin-1", 5000)]
    finally:
        store.close()
    q = ReportQueries(new)
    try:
        kept = {(r.device, r.seq) for r in q.reports()}
    finally:
        q.close()
    assert ("bin-1", 5000) in kept and readable <= kept and len(kept) <= 3001


def _readable_rows(db: Path) -> set[tuple[str, int]]:
    """The (device, seq) of every report row SQLite can still read, front to back and back to front."""
    found: set[tuple[str, int]] = set()
    conn = sqlite3.connect(db)
    try:
        for order in ("ASC", "DESC"):
            try:
                for device, seq in conn.execute("SELECT device, seq FROM reports NOT INDEXED ORDER BY rowid %s"
                                                % order):
                    found.add((device, seq))
            except sqlite3.DatabaseError:
                pass
    finally:
        conn.close()
    return found


def test_export_log_names_a_damaged_chain_entry_instead_of_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """QA LOW-4: a chain value turned into a blob crashed export-log (bytes not JSON serializable)."""
    db = tmp_path / "r.sqlite"
    filled_store(db, n=10)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE chain SET prev = CAST(prev AS BLOB) WHERE pos = 5")  # what a flipped type byte reads as
    conn.close()
    assert main(["gateway", "export-log", "--db", str(db)]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 4  # the entries before it
    assert "error (corrupt): provenance chain entry at pos 5 (after entry 4 (device" in err
    assert "prev is a blob of 64 bytes, not text" in err and "Traceback" not in err


def test_min_free_mb_is_checked(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "min_free_mb = -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert info.value.key == "storage.min_free_mb" and info.value.reason == "bad_value"


def test_run_check_warns_of_a_disk_below_min_free_mb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, "min_free_mb = 10000000\n")  # 10 TB: more than this disk has free
    assert main(["gateway", "run", "--config", str(cfg), "--check"]) == 0
    out, err = capsys.readouterr()
    assert "config OK" in out
    assert "warning: report store disk low:" in err and "below [storage] min_free_mb = 10000000 MiB" in err


@pytest.mark.timeout(60)
async def test_a_low_disk_is_warned_about_and_degrades_health_when_nearly_full(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """QA LOW-8: at 95-99 % full nothing was said; only a metric showed it."""
    caplog.set_level(logging.INFO)
    gw = Gateway(load_config(_config(tmp_path, "min_free_mb = 10000000\n")))
    await gw.start()
    try:
        await _wait(lambda: "report store disk low:" in caplog.text, "WARNING logged")
        status, health = await _get(gw, "/healthz")
        assert status == 503 and any(r.startswith("report store disk low:") for r in health["reasons"]), health
    finally:
        await gw.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "disk low" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: once an hour while it lasts
