"""A store found damaged is written to no more (review MEDIUM-2): not only insert_batch refuses, but
retention, meta rows, ACK floors and outbox removals too; and a gateway holding it still stops cleanly.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from pathlib import Path

import pytest
from conftest import make_env

from gateway.config import load_config
from gateway.errors import StorageError
from gateway.retention_clock import META_KEY as RETENTION_META_KEY
from gateway.service import Gateway
from gateway.storage import ReportRecord, ReportStore

T0 = 1_700_000_100 - (1_700_000_100 % 3600)


def rec(seq: int) -> ReportRecord:
    return ReportRecord(device="bin-1", seq=seq, kind="bin", zone="north", type="win", w=T0 + 900 * seq, l=900,
                        m={"fill": 40, "temp": 12}, e={}, a=[], fw="1.0", received_at=T0 + 900 * seq + 5.0,
                        link="serial:/dev/x", digest="%064x" % seq)


def files_digest(db: Path) -> dict[str, str]:
    """The bytes of the store's files (a write changes the -wal, or the main file after a checkpoint)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (db, db.with_name(db.name + "-wal")) if p.exists()}


def test_every_write_is_refused_once_the_store_is_marked_damaged(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw1", outbox_encoder=lambda r: ("city/x", b"payload"))
    try:
        store.insert_batch([rec(s) for s in range(1, 5)])
        [msg, *_] = store.outbox_peek(10)
        before = files_digest(db)
        assert store.mark_damaged("PRAGMA quick_check found: On tree page 3 cell 0: invalid page number")
        writes = {
            "retention": lambda: store.apply_retention({("bin", "temp"): 1}, T0 + 400 * 86400),
            "save_meta published": lambda: store.save_meta("published:csv", "1 2 3"),
            "save_meta retention": lambda: store.save_meta(RETENTION_META_KEY, "{}"),
            "save_floors": lambda: store.save_floors({"bin-1": 4}),
            "outbox_delete": lambda: store.outbox_delete([msg.id]),
            "outbox_refuse": lambda: store.outbox_refuse([msg.id]),
            "insert_batch": lambda: store.insert_batch([rec(9)]),
        }
        for what, write in writes.items():
            with pytest.raises(StorageError) as err:
                write()
            assert err.value.reason == "corrupt", what
            assert "On tree page 3" in str(err.value), what
        assert files_digest(db) == before  # not a byte written
        assert store.outbox_depth == 4
    finally:
        store.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM reports WHERE json_type(m, '$.temp') IS NOT NULL").fetchone() == (4,)
        assert conn.execute("SELECT COUNT(*) FROM ack_floor").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'published:%'").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone() == (4,)
    finally:
        conn.close()


@pytest.mark.timeout(60)
async def test_a_gateway_latched_damaged_stops_cleanly_and_saves_no_floors(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ingest.stop() saved the ACK floors unguarded: refused (corrupt), it raised out of Gateway.stop()
    before store.close(), leaving the store locked and its -wal not checkpointed."""
    caplog.set_level(logging.INFO)
    cfg = make_env(tmp_path)
    db = tmp_path / "data" / "reports.sqlite"
    gw = Gateway(load_config(cfg))
    await gw.start()
    try:
        gw.store.mark_damaged("PRAGMA quick_check found: On tree page 3 cell 0: invalid page number")
        # ACK floors that moved since the last commit, as links leave them: saved at stop.
        gw.ingest._dirty_floors["bin-1"] = 7  # noqa: SLF001
    finally:
        await gw.stop()  # does not raise
    assert any(r.levelno == logging.WARNING and "ACK floors of 1 device(s) not saved at stop" in r.getMessage()
               for r in caplog.records)
    # store.close() was reached: the lock is released (a second open is not 'in_use') and nothing was saved.
    store = ReportStore(db, gateway_id="gw-test")
    try:
        assert store.ack_floors() == {}
    finally:
        store.close()


@pytest.mark.timeout(60)
async def test_retention_does_not_retry_a_damaged_store_every_pass(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Once damaged, every write is refused: a retention pass would fail with an ERROR each interval
    (the damage is logged once elsewhere). Fails before (an ERROR 'retention pass failed' per second)."""
    import asyncio

    caplog.set_level(logging.INFO)
    gw = Gateway(load_config(make_env(tmp_path, extra="[retention]\ninterval_s = 1\n")))
    await gw.start()
    try:
        await asyncio.sleep(0.5)  # the first pass ran on the sound store
        gw.store.mark_damaged("PRAGMA quick_check found: On tree page 3 cell 0: invalid page number")
        caplog.clear()
        await asyncio.sleep(3.5)  # three passes' worth
    finally:
        await gw.stop()
    failed = [r for r in caplog.records if "retention pass failed" in r.getMessage()]
    assert failed == [], [r.getMessage() for r in failed]
