"""A frame under a seq kept in a device window's ``recent`` without its digest (loaded at start) is compared
with the digest the store answers. At or below the device's retired seq (report retention removed the row)
the store answers :data:`~gateway.storage.store.RETIRED_TOO_NEW` for a frame whose period is too new to have
been removed: never a frame digest (not hex), so a new board under the id (seq_reused), not a re-send."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import KEYS
from helpers import AckLog, report_frame, settle

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Verifier
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportStore


def _ingest(registry: Registry, db: Path, metrics: GatewayMetrics) -> IngestService:
    # a gap below a stored seq is held (not given up): the ACK floor stays below it
    return IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                         metrics=metrics, batch_ms=10, gap_hold_s=3600.0)


async def test_a_new_frame_under_a_recent_seq_the_store_reads_as_retired_too_new_is_refused(
        registry: Registry, tmp_path: Path) -> None:
    """Was: ``bytes.fromhex`` of the store's answer raised ValueError in the handler task (an unretrieved task
    exception logged, no seq_reused count or warning). Test fails before."""
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = _ingest(registry, db, metrics)
    await ingest.start()
    a = AckLog("serial:recent")
    ingest.feed(report_frame("bin-1", 5, KEYS["bin-1"]), a.link)  # 1..4 missing: the floor stays at 0
    await settle(ingest)
    assert ReportQueries(db).count_reports() == 1
    await ingest.stop()
    ingest.close()
    ingest.store.close()
    # Report retention removed up to seq 10, written directly (as test_seq_reused.py's _retire): the row of
    # seq 5 stays so the restart loads it, which a real pass would reach only after the floor passed it (a
    # window loaded years before); the store answers from the retired seq first either way.
    conn = sqlite3.connect(db)
    try:
        conn.execute("INSERT INTO retired_seqs (device, seq) VALUES ('bin-1', 10)")
        conn.commit()
    finally:
        conn.close()

    ingest = _ingest(registry, db, metrics)  # seq 5 is above the floor: loaded into recent, digest unknown
    await ingest.start()
    assert dict(ingest._windows["bin-1"].recent.items()) == {5: None}  # noqa: SLF001 - the state this is about
    # a board that took the id over: seq 5 again, a period newer than any retention could have removed
    ingest.feed(report_frame("bin-1", 5, KEYS["bin-1"], w=1_800_000_000 + 900 * 5), a.link)
    await settle(ingest)
    assert metrics.value("civicedge_rejections_total", {"reason": "seq_reused"}) == 1
    assert metrics.value("civicedge_reports_duplicate_total") == 0
    assert a.sent == []
    await ingest.stop()
    ingest.close()
    ingest.store.close()
