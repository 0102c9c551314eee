"""A report seq no frame can carry (beyond u32), written into the store by another program, does not stop
the gateway's start (review 2: RecentDigests' array('I') raised a bare OverflowError at start)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from conftest import KEYS
from helpers import AckLog, report_frame, settle
from test_ingest_recent_retired import _ingest

from gateway.metrics import GatewayMetrics
from gateway.registry import Registry


async def test_a_stored_seq_beyond_u32_is_left_out_of_the_window_with_a_warning(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "r.sqlite"
    ingest = _ingest(registry, db, GatewayMetrics("gw"))
    await ingest.start()
    acks = AckLog("serial:u32")
    for seq in (5, 6):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), acks.link)
    await settle(ingest)
    await ingest.stop()
    ingest.close()
    ingest.store.close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE reports SET seq = 4294967296 WHERE seq = 5")
    conn.commit()
    conn.close()
    ingest = _ingest(registry, db, GatewayMetrics("gw"))
    with caplog.at_level(logging.WARNING, logger="gateway.pipeline.ingest"):
        await ingest.start()
    try:
        window = ingest._windows["bin-1"]  # noqa: SLF001 - the restored replay window
        assert 4294967296 not in window.recent and 6 in window.recent
        assert any("outside 1..4294967295" in r.getMessage() and "bin-1" in r.getMessage() for r in caplog.records)
        ingest.feed(report_frame("bin-1", 7, KEYS["bin-1"]), acks.link)  # the board's next report is still stored
        await settle(ingest)
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("SELECT count(*) FROM reports WHERE device = 'bin-1' AND seq = 7").fetchone() == (1,)
        finally:
            conn.close()
    finally:
        await ingest.stop()
        ingest.close()
        ingest.store.close()
