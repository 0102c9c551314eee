"""The first report stored for a period wins (real SQLite file, real ingest pipeline).

A board whose clock was set back by more than STEP_BACK_S reports the periods since again under new
seqs (protocol §3). The gateway acknowledges such a report, does not store, chain or publish it, and
counts it; ``alarm`` and ``boot`` reports are events and are all stored.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
from pathlib import Path

import pytest
from conftest import KEYS
from helpers import WINDOW_T0, report_frame
from test_verify_ingest import Collector, _settle

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Verifier
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportRecord, ReportStore
from gateway.storage.provenance import export_chain
from gateway.storage.schema import SCHEMA_VERSION
from gateway.storage.store import WindowDuplicate

W = WINDOW_T0 + 21600 - WINDOW_T0 % 21600  # a 6-hour boundary: a 900 s and a 21600 s period start here


def rec(device: str, seq: int, w: int = W, *, type_: str = "win", l: int = 900,  # noqa: E741
        m: dict[str, int] | None = None, a: list[str] | None = None) -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind="streetlight", zone="centre", type=type_, w=w, l=l,
                        m={"lux": seq} if m is None else m, e={}, a=a or [], fw="1.0", received_at=w + 5.0,
                        link="serial:/dev/x", digest="%064x" % seq)


def _encoder(r: ReportRecord) -> tuple[str, bytes]:
    return "civicedge/%s" % r.device, b"%d" % r.seq


def _rows(db: Path) -> list[tuple[str, int, str, int, int]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT device, seq, type, w, l FROM reports ORDER BY id").fetchall()
    finally:
        conn.close()


def test_the_first_report_of_a_period_wins_and_the_later_one_is_recorded_not_stored(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw", outbox_encoder=_encoder)
    first = store.insert_batch([rec("sl-1", 1, m={"lux": 10})])
    assert first.inserted == [("sl-1", 1)] and first.window_duplicates == []
    again = store.insert_batch([rec("sl-1", 7, m={"lux": 99}), rec("sl-1", 8, W + 900)])
    assert again.inserted == [("sl-1", 8)] and again.duplicates == []
    assert again.window_duplicates == [WindowDuplicate("sl-1", 7, "win", W, 900, 1)]
    assert _rows(db) == [("sl-1", 1, "win", W, 900), ("sl-1", 8, "win", W + 900, 900)]
    assert [r.m for r in ReportQueries(db).reports(device="sl-1")][0] == {"lux": 10}  # the first one's values
    # committed all the same: a re-send is a plain duplicate, counted once, and the replay window knows it
    assert store.has("sl-1", 7) and store.max_seqs() == {"sl-1": 8} and store.seqs_above("sl-1", 0, 10) == [1, 7, 8]
    resent = store.insert_batch([rec("sl-1", 7, m={"lux": 99})])
    assert resent.duplicates == [("sl-1", 7)] and resent.window_duplicates == [] and resent.inserted == []
    assert store.counter("duplicate_windows") == 1
    assert store.outbox_depth == 2 and [m.payload for m in store.outbox_peek(10)] == [b"1", b"8"]  # not published
    store.close()
    out = io.StringIO()
    assert export_chain(db, out) == 2
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [1, 8]  # 7 is not chained
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT device, seq, type, w, l, kept_seq, digest FROM window_duplicates").fetchall() == [
        ("sl-1", 7, "win", W, 900, 1, "%064x" % 7)]
    conn.close()


def test_duplicates_inside_one_batch_and_periods_that_differ(tmp_path: Path) -> None:
    """Within a batch the first wins too; another type, another length, another device or another w is
    another period (a streetlight's 900 s window and 6-hourly count release share w at 6-hour marks)."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    res = store.insert_batch([
        rec("sl-1", 1), rec("sl-1", 2, l=21600, m={}), rec("sl-1", 3, type_="hour", l=3600, m={}),
        rec("sl-2", 1), rec("sl-1", 4, W + 900), rec("sl-1", 5), rec("sl-1", 6, l=21600, m={}),
        rec("sl-1", 5),  # the same frame twice in a batch: a plain duplicate, not a second window duplicate
    ])
    assert res.inserted == [("sl-1", 1), ("sl-1", 2), ("sl-1", 3), ("sl-2", 1), ("sl-1", 4)]
    assert res.window_duplicates == [WindowDuplicate("sl-1", 5, "win", W, 900, 1),
                                     WindowDuplicate("sl-1", 6, "win", W, 21600, 2)]
    assert res.duplicates == [("sl-1", 5)]
    assert len(_rows(db)) == 5 and store.counter("duplicate_windows") == 2
    store.close()


def test_alarms_and_boot_reports_are_events_and_all_stored(tmp_path: Path) -> None:
    """Two alarms (or two boots) in one minute are two events: nothing is dropped for them."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    minute = W + 120
    res = store.insert_batch([rec("sl-1", 1, minute, type_="alarm", l=60, m={}, a=["lamp_fail"]),
                              rec("sl-1", 2, minute, type_="alarm", l=60, m={}, a=["lamp_fail"]),
                              rec("sl-1", 3, minute, type_="boot", l=60, m={})])
    res2 = store.insert_batch([rec("sl-1", 4, minute, type_="boot", l=60, m={}),
                               rec("sl-1", 5, minute, type_="alarm", l=60, m={}, a=["lamp_fail"])])
    assert res.window_duplicates == res2.window_duplicates == []
    assert [s for _, s, *_ in _rows(db)] == [1, 2, 3, 4, 5]
    assert len(ReportQueries(db).alarms(start=minute, end=minute + 60)) == 3
    store.close()


def test_a_version_2_store_holding_two_reports_of_one_period_opens_and_keeps_them(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("sl-1", 1), rec("sl-1", 2, W + 900)])
    store.close()
    conn = sqlite3.connect(db)  # as a version 2 gateway left it: the same window stored under seqs 1 and 3
    conn.execute("INSERT INTO reports (device, seq, kind, zone, type, w, l, m, e, a, fw, received_at, gateway_id,"
                  " link, digest) SELECT device, 3, kind, zone, type, w, l, '{\"lux\":3}', e, a, fw, received_at,"
                  " gateway_id, link, digest FROM reports WHERE seq = 1")
    conn.execute("DROP TABLE window_duplicates")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()

    store = ReportStore(db, gateway_id="gw")
    assert [s for _, s, *_ in _rows(db)] == [1, 2, 3]  # nothing lost
    assert store.max_seqs() == {"sl-1": 3}
    res = store.insert_batch([rec("sl-1", 3), rec("sl-1", 4)])  # a re-send of seq 3; a third report of W
    assert res.duplicates == [("sl-1", 3)] and res.inserted == []
    assert res.window_duplicates == [WindowDuplicate("sl-1", 4, "win", W, 900, 1)]
    store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert SCHEMA_VERSION == 3 and conn.execute("SELECT COUNT(*) FROM reports").fetchone() == (3,)
    conn.close()


def _ingest(registry: Registry, db: Path, metrics: GatewayMetrics, gap_hold_s: float = 60.0) -> IngestService:
    return IngestService(store=ReportStore(db, gateway_id="gw", outbox_encoder=_encoder),
                         verifier=Verifier(registry, load_policy()), metrics=metrics, batch_ms=20,
                         gap_hold_s=gap_hold_s)


async def test_ingest_acknowledges_a_duplicate_window_counts_and_logs_it_and_stores_the_first(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Seqs 1..3 cover windows W, W+900, W+1800; then the clock went back and seqs 4..6 claim them again,
    seq 7 the next window. Every seq is acknowledged (the ACK is not held at the not-stored ones, even
    with a 60 s gap hold), three rows and one chain entry per window, one warning for the burst."""
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = _ingest(registry, db, metrics)
    await ingest.start()
    c = Collector()
    caplog.set_level(logging.WARNING, logger="gateway.pipeline.ingest")
    for seq in (1, 2, 3):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"], w=W + 900 * (seq - 1)), c.link)
    await _settle(ingest)
    for seq in (4, 5, 6):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"], w=W + 900 * (seq - 4)), c.link)
        await _settle(ingest)  # one commit each: the warning is rate-limited across commits
    ingest.feed(report_frame("bin-1", 7, KEYS["bin-1"], w=W + 2700), c.link)
    await _settle(ingest)
    assert max(s for _, s in c.acks) == 7
    assert metrics.value("civicedge_reports_duplicate_window_total") == 3
    assert metrics.value("civicedge_reports_stored_total") == 4
    assert metrics.value("civicedge_reports_duplicate_total") == 0
    assert [(s, w) for _, s, _, w, _ in _rows(db)] == [(1, W), (2, W + 900), (3, W + 1800), (7, W + 2700)]
    assert ingest.store.outbox_depth == 4 and ingest.store.counter("duplicate_windows") == 3
    warnings = [r.getMessage() for r in caplog.records if "already stored" in r.getMessage()]
    assert len(warnings) == 1  # one line per minute, naming device, type and window
    assert warnings[0].startswith("bin-1: win report for the period ") and "w=%d, l=900 s" % W in warnings[0]
    assert "seq 4 acknowledged, not stored" in warnings[0] and "(seq 1)" in warnings[0]
    # a re-send of a not-stored seq (its ACK was lost) is re-acknowledged as a duplicate, not counted again
    ingest.feed(report_frame("bin-1", 5, KEYS["bin-1"], w=W + 900), c.link)
    await _settle(ingest)
    assert c.acks[-1] == ("bin-1", 7) and metrics.value("civicedge_reports_duplicate_total") == 1
    assert metrics.value("civicedge_reports_duplicate_window_total") == 3
    await ingest.stop()
    ingest.close()
    ingest.store.close()


async def test_after_a_restart_not_stored_seqs_are_still_settled(registry: Registry, tmp_path: Path) -> None:
    """The ACK floor is persisted lazily: a restart may find it below a seq that was not stored. That seq
    is known from ``window_duplicates``, so the ACK is not held at it as at a gap (60 s hold here)."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([ReportRecord(device="bin-1", seq=1, kind="bin", zone="north", type="win", w=W, l=900,
                                     m={"fill": 10}, e={}, a=[], fw=None, received_at=W + 5.0, link="serial:x",
                                     digest="0" * 64)], {"bin-1": 1})
    store.insert_batch([ReportRecord(device="bin-1", seq=2, kind="bin", zone="north", type="win", w=W, l=900,
                                     m={"fill": 90}, e={}, a=[], fw=None, received_at=W + 6.0, link="serial:x",
                                     digest="1" * 64)])
    store.close()
    metrics = GatewayMetrics("gw")
    ingest = _ingest(registry, db, metrics)
    await ingest.start()
    c = Collector()
    ingest.feed(report_frame("bin-1", 3, KEYS["bin-1"], w=W + 900), c.link)
    ingest.feed(report_frame("bin-1", 2, KEYS["bin-1"], w=W), c.link)  # re-sent: the ACK was lost
    await _settle(ingest)
    assert max(s for _, s in c.acks) == 3
    assert metrics.value("civicedge_reports_duplicate_total") == 1
    assert metrics.value("civicedge_reports_duplicate_window_total") == 0
    assert [s for _, s, *_ in _rows(db)] == [1, 3]
    await ingest.stop()
    ingest.close()
    ingest.store.close()


async def test_duplicate_windows_in_one_commit(registry: Registry, tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=metrics, batch_ms=300, batch_max=1000, gap_hold_s=60.0)
    await ingest.start()
    c = Collector()
    for seq, w in ((1, W), (2, W + 900), (3, W), (4, W + 900), (5, W + 1800)):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"], w=w), c.link)
    await asyncio.sleep(0)
    await _settle(ingest)
    assert c.acks == [("bin-1", 5)]  # one commit, one cumulative ACK over the not-stored seqs
    assert [s for _, s, *_ in _rows(db)] == [1, 2, 5]
    assert metrics.value("civicedge_reports_duplicate_window_total") == 2
    await ingest.stop()
    ingest.close()
    ingest.store.close()
