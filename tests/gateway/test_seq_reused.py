"""A board whose seq counter restarted under an id with stored reports (a new board taking the id over,
a board erased and re-provisioned) sends new reports under seqs the store already holds: they are not
re-sends (another frame digest), so they are never acknowledged (the board would delete them) nor
counted as duplicates; they are rejected as ``seq_reused`` and warned about."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path

import pytest
from conftest import KEYS
from helpers import AckLog, report_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Verifier
from gateway.pipeline.ingest import REPLAY_WINDOW
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportStore

EXAMPLES = 100 if os.environ.get("CIVICEDGE_FULL") == "1" else 20


async def _settle(ingest: IngestService) -> None:
    for _ in range(300):
        await asyncio.sleep(0.01)
        if not ingest._tasks and ingest._queue.empty():
            return


def _ingest(registry: Registry, db: Path, metrics: GatewayMetrics) -> IngestService:
    return IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                         metrics=metrics, batch_ms=10, gap_hold_s=0.0)


def new_board_frame(seq: int) -> bytes:
    """A report of the board that took the id over: same seq as the old board's, another period."""
    return report_frame("bin-1", seq, KEYS["bin-1"], w=1_800_000_000 + 900 * seq)


async def test_a_reused_seq_is_not_acknowledged_nor_a_duplicate(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = _ingest(registry, db, metrics)
    await ingest.start()
    old = AckLog("serial:reuse")
    for seq in range(1, 6):  # the dead board's reports
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), old.link)
    await _settle(ingest)
    assert old.sent[-1] == ("bin-1", 5)
    await ingest.stop()
    ingest.close()
    ingest.store.close()

    # The gateway restarts (the window comes from the store); the new board starts at seq 1.
    ingest = _ingest(registry, db, metrics)
    await ingest.start()
    new = AckLog("serial:reuse")
    caplog.set_level(logging.WARNING, logger="gateway.pipeline.ingest")
    for seq in (1, 2):
        ingest.feed(new_board_frame(seq), new.link)
    await _settle(ingest)
    assert new.sent == []  # an ACK (cumulative, of 5) would make the board delete seqs 1 and 2
    assert metrics.value("civicedge_reports_duplicate_total") == 0
    assert metrics.value("civicedge_rejections_total", {"reason": "seq_reused"}) == 2
    assert ReportQueries(db).count_reports() == 5
    warnings = [r.getMessage() for r in caplog.records if "seq_reused" in r.getMessage() or "reused" in r.getMessage()]
    assert len(warnings) == 1, warnings  # rate-limited: one line per device
    assert "bin-1" in warnings[0] and "highest seq stored or acknowledged 5" in warnings[0] and "--seq-start 6" in warnings[0]
    # the command works on the board holding the id (no re-keying) and carries its registry zone and location
    assert "--zone north" in warnings[0] and "--location " in warnings[0] and "ZONE" not in warnings[0]
    assert "--force" not in warnings[0] and "--take-over" not in warnings[0] and "lost" in warnings[0]

    # A re-send of the old board's own frame is still a duplicate: re-acknowledged.
    ingest.feed(report_frame("bin-1", 3, KEYS["bin-1"]), new.link)
    await _settle(ingest)
    assert new.sent == [("bin-1", 5)]
    assert metrics.value("civicedge_reports_duplicate_total") == 1
    await ingest.stop()
    ingest.close()
    ingest.store.close()


async def test_a_reused_seq_below_the_replay_window_is_told_apart(registry: Registry, tmp_path: Path) -> None:
    """A stored seq older than the window (asked of the store) with another digest: seq_reused too."""
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = _ingest(registry, db, metrics)
    await ingest.start()
    a = AckLog("serial:reuse")
    ingest.feed(report_frame("bin-1", 1, KEYS["bin-1"]), a.link)
    ingest.feed(report_frame("bin-1", 2, KEYS["bin-1"]), a.link)
    far = 2 + REPLAY_WINDOW + 5
    ingest.feed(report_frame("bin-1", far, KEYS["bin-1"]), a.link)
    await _settle(ingest)
    a.sent.clear()
    ingest.feed(new_board_frame(2), a.link)
    await _settle(ingest)
    assert a.sent == []
    assert metrics.value("civicedge_rejections_total", {"reason": "seq_reused"}) == 1
    ingest.feed(report_frame("bin-1", 2, KEYS["bin-1"]), a.link)  # the real re-send: acknowledged
    await _settle(ingest)
    assert a.sent and metrics.value("civicedge_reports_duplicate_total") == 1
    await ingest.stop()
    ingest.close()
    ingest.store.close()


# Arrivals: (seq, from the new board?): old-board re-sends and new-board reports under the same seqs.
arrivals = st.lists(st.tuples(st.integers(1, 12), st.booleans()), min_size=1, max_size=40)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old_count=st.integers(1, 12), evs=arrivals)
def test_property_a_reused_seq_is_never_acknowledged(old_count: int, evs: list[tuple[int, bool]]) -> None:
    """Whatever the order: no ACK ever covers a seq of the new board that the old board's stored report
    holds (it would delete the new board's report), and the old board's reports stay as they were."""
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_property_run(Path(tmp), old_count, evs))


async def _property_run(tmp: Path, old_count: int, evs: list[tuple[int, bool]]) -> None:
    reg = Registry(tmp / "reg")
    reg.add("bin-1", kind="bin", zone="z", lat="1", lon="2", key=KEYS["bin-1"])
    db = tmp / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = _ingest(reg, db, metrics)
    await ingest.start()
    setup = AckLog("serial:reuse")
    for seq in range(1, old_count + 1):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), setup.link)
    await _settle(ingest)
    new = AckLog("serial:reuse")  # the new board's link
    for seq, from_new in evs:
        if from_new and seq <= old_count:
            ingest.feed(new_board_frame(seq), new.link)
        elif not from_new and seq <= old_count:
            ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), setup.link)
    await _settle(ingest)
    assert new.sent == []  # the new board's link only ever carried reused seqs
    assert metrics.value("civicedge_rejections_total", {"reason": "seq_reused"}) == sum(
        1 for s, n in evs if n and s <= old_count)
    stored = ReportQueries(db).reports(device="bin-1")
    assert sorted(r.seq for r in stored) == list(range(1, old_count + 1))
    await ingest.stop()
    ingest.close()
    ingest.store.close()
    reg.close()


def _retire(db: Path, seq: int) -> None:
    """Record ``seq`` as bin-1's highest seq report retention removed (its rows, digests with them, gone)."""
    import sqlite3

    ReportStore(db, gateway_id="gw").close()
    conn = sqlite3.connect(db)
    try:
        conn.execute("INSERT INTO retired_seqs (device, seq) VALUES ('bin-1', ?)", (seq,))
        conn.commit()
    finally:
        conn.close()


async def test_a_new_frame_under_a_seq_whose_row_retention_removed_is_refused(
        registry: Registry, tmp_path: Path) -> None:
    """Retention keeps only a device's highest removed seq, not the digests; but it removes only rows whose
    period ended before the kind's report retention: a frame at or below the retired seq whose period is
    newer was never stored (a new board under a long-lived id), refused as seq_reused, never acknowledged
    (was: re-acknowledged as a duplicate, silently lost)."""
    db = tmp_path / "r.sqlite"
    _retire(db, 10)
    metrics = GatewayMetrics("gw")
    ingest = _ingest(registry, db, metrics)
    await ingest.start()
    a = AckLog("serial:reuse")
    ingest.feed(new_board_frame(4), a.link)
    await _settle(ingest)
    assert metrics.value("civicedge_rejections_total", {"reason": "seq_reused"}) == 1
    assert metrics.value("civicedge_reports_duplicate_total") == 0
    assert a.sent == []
    assert ReportQueries(db).count_reports() == 0
    await ingest.stop()
    ingest.close()
    ingest.store.close()


async def test_a_resend_of_a_row_retention_removed_stays_a_duplicate(registry: Registry, tmp_path: Path) -> None:
    """A frame at or below the retired seq whose period ended before the kind's report retention may be a
    re-send of a removed row: re-acknowledged as a duplicate, never stored again. The retention of the last
    pass counts (here 400 days: a period 100 days old is too new, one 500 days old may be removed)."""
    import time

    db = tmp_path / "r.sqlite"
    _retire(db, 10)
    metrics = GatewayMetrics("gw")
    ingest = _ingest(registry, db, metrics)
    await ingest.start()
    # only plans a pass (nothing to remove in an empty store): the store learns bin's report retention
    await ingest.run_in_store(ingest.store.apply_retention, {("bin", "fill"): 400}, time.time())
    now = int(time.time()) // 900 * 900
    a = AckLog("serial:reuse")
    ingest.feed(report_frame("bin-1", 4, KEYS["bin-1"], w=now - 500 * 86400), a.link)
    await _settle(ingest)
    assert metrics.value("civicedge_reports_duplicate_total") == 1
    assert [d for d, _ in a.sent] == ["bin-1"]  # re-acknowledged
    ingest.feed(report_frame("bin-1", 5, KEYS["bin-1"], w=now - 100 * 86400), a.link)
    await _settle(ingest)
    assert metrics.value("civicedge_rejections_total", {"reason": "seq_reused"}) == 1
    assert metrics.value("civicedge_reports_duplicate_total") == 1
    assert ReportQueries(db).count_reports() == 0
    await ingest.stop()
    ingest.close()
    ingest.store.close()


class CountingStore(ReportStore):
    """The real store, counting the digest lookups ingest asks of its one thread."""

    lookups = 0

    def committed_digest(self, device: str, seq: int, kind: str | None = None,
                         period_end: int | None = None) -> str | None:
        CountingStore.lookups += 1
        return super().committed_digest(device, seq, kind, period_end)


async def test_resends_of_recent_seqs_are_compared_in_memory(registry: Registry, tmp_path: Path) -> None:
    """Re-sends of recently committed seqs (a lost ACK) and another frame under one of them are told apart
    by the digest prefix kept per seq, without a store lookup on the store's one thread; after a restart
    the store is asked once per seq. Test fails before (a lookup per re-send)."""
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    CountingStore.lookups = 0

    def counting() -> IngestService:
        return IngestService(store=CountingStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                             metrics=metrics, batch_ms=10, gap_hold_s=0.0)

    ingest = counting()
    await ingest.start()
    a = AckLog("serial:reuse")
    old = [report_frame("bin-1", s, KEYS["bin-1"]) for s in range(1, 6)]
    for f in old:
        ingest.feed(f, a.link)
    await _settle(ingest)
    for _ in range(2):
        for f in old:
            ingest.feed(f, a.link)
        await _settle(ingest)
    ingest.feed(new_board_frame(3), a.link)
    await _settle(ingest)
    assert metrics.value("civicedge_reports_duplicate_total") == 10
    assert metrics.value("civicedge_rejections_total", {"reason": "seq_reused"}) == 1
    assert CountingStore.lookups == 0
    await ingest.stop()
    ingest.close()
    ingest.store.close()

    ingest = counting()  # restarted: no digest in memory, the store is asked once per seq
    await ingest.start()
    for _ in range(2):
        for f in old:
            ingest.feed(f, a.link)
        await _settle(ingest)
    ingest.feed(new_board_frame(5), a.link)
    await _settle(ingest)
    assert CountingStore.lookups == len(old)
    assert metrics.value("civicedge_reports_duplicate_total") == 10 + 2 * len(old)
    assert metrics.value("civicedge_rejections_total", {"reason": "seq_reused"}) == 2
    await ingest.stop()
    ingest.close()
    ingest.store.close()


async def test_the_warning_names_the_ack_floor_when_refusals_moved_it_past_the_stored_seqs(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An authentic refusal (here fields off the kind's allowlist: policy) moves the ACK floor past the highest stored seq:
    a board started at that seq + 1 would have its reports stored but ignore every ACK (the floor is above
    its seqs) and re-send for good. The warning's --seq-start and the store's reading both start above the
    floor. Test fails before (they named the highest stored seq)."""
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = _ingest(registry, db, metrics)
    await ingest.start()
    a = AckLog("serial:reuse")
    for seq in range(1, 4):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), a.link)
    await _settle(ingest)
    for seq in (4, 5):  # authentic, refused: never stored
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"], kind="streetlight"), a.link)
    ingest.feed(report_frame("bin-1", 3, KEYS["bin-1"]), a.link)  # a re-send: its ACK moves the floor over 4, 5
    await _settle(ingest)
    assert metrics.value("civicedge_rejections_total", {"reason": "policy"}) == 2
    assert a.sent[-1] == ("bin-1", 5)
    caplog.set_level(logging.WARNING, logger="gateway.pipeline.ingest")
    ingest.feed(new_board_frame(2), a.link)
    await _settle(ingest)
    await ingest.stop()  # saves the floor
    ingest.close()
    ingest.store.close()
    warnings = [r.getMessage() for r in caplog.records if "already stored with another frame" in r.getMessage()]
    assert len(warnings) == 1 and "acknowledged 5" in warnings[0] and "--seq-start 6" in warnings[0], warnings
    assert ReportQueries(db).count_reports() == 3
    assert ReportQueries(db).highest_seq("bin-1") == 5


async def test_the_warning_at_the_top_of_the_seq_space_names_a_new_id(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """At seq 4294967295 stored there is no --seq-start to give (provision refuses 4294967296): the warning
    says to provision under a new id. Test fails before (it suggested --seq-start 4294967296)."""
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = _ingest(registry, db, metrics)
    await ingest.start()
    a = AckLog("serial:reuse")
    top = 0xFFFFFFFF
    ingest.feed(report_frame("bin-1", top, KEYS["bin-1"], w=1_799_991_000), a.link)
    await _settle(ingest)
    caplog.set_level(logging.WARNING, logger="gateway.pipeline.ingest")
    ingest.feed(report_frame("bin-1", top, KEYS["bin-1"], w=1_800_000_000), a.link)
    await _settle(ingest)
    await ingest.stop()
    ingest.close()
    ingest.store.close()
    warnings = [r.getMessage() for r in caplog.records if "already stored with another frame" in r.getMessage()]
    assert len(warnings) == 1 and "provision the board under a new id" in warnings[0], warnings
    assert "--seq-start" not in warnings[0], warnings
