"""One release per period: the first stored wins (real SQLite file, real ingest pipeline).

A board whose clock was set back by more than STEP_BACK_S reports the periods since again under new
seqs (protocol §3). A release among them (a ``win``/``hour``/``day`` report with a non-empty ``e``)
whose ``(device, type, w, l, fields of e)`` is stored already is acknowledged, not stored, chained or
published, and counted; its ε spend is kept in ``window_duplicates``. Aggregates without ``e`` (lux,
lamp, energy, fill) are measurements and always stored; ``alarm`` and ``boot`` reports are events and
all stored.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import KEYS
from helpers import WINDOW_T0, report_frame
from test_verify_ingest import Collector, _settle

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Verifier
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportRecord, ReportStore
from gateway.storage.provenance import export_chain, frame_digest
from gateway.storage.schema import SCHEMA_VERSION
from gateway.storage.store import WindowDuplicate

W = WINDOW_T0 + 21600 - WINDOW_T0 % 21600  # a 6-hour boundary: a 900 s and a 21600 s period start here
MOT = ("mot",)


def rec(device: str, seq: int, w: int = W, *, type_: str = "win", l: int = 900,  # noqa: E741
        m: dict[str, int] | None = None, e: dict[str, int] | None = None, a: list[str] | None = None) -> ReportRecord:
    """A report; by default a ``mot`` release (``e`` non-empty)."""
    return ReportRecord(device=device, seq=seq, kind="streetlight", zone="centre", type=type_, w=w, l=l,
                        m={"mot": seq} if m is None else m, e={"mot": 500} if e is None else e, a=a or [],
                        fw="1.0", received_at=w + 5.0, link="serial:/dev/x", digest="%064x" % seq)


def agg(device: str, seq: int, w: int = W, **kw: Any) -> ReportRecord:
    """A streetlight window aggregate as the firmware sends it: lux, lvl, lamp, no ``e``."""
    kw.setdefault("m", {"lux": seq, "lvl": 40, "lamp": 0})
    return rec(device, seq, w, e={}, **kw)


def _encoder(r: ReportRecord) -> tuple[str, bytes]:
    return "civicedge/%s" % r.device, b"%d" % r.seq


def _rows(db: Path) -> list[tuple[str, int, str, int, int]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT device, seq, type, w, l FROM reports ORDER BY id").fetchall()
    finally:
        conn.close()


def _not_stored(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT device, seq, kind, type, w, l, e, kept_seq, digest FROM window_duplicates"
                            " ORDER BY device, seq").fetchall()
    finally:
        conn.close()


def test_the_first_release_of_a_period_wins_and_the_later_one_is_recorded_with_its_spend(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw", outbox_encoder=_encoder)
    first = store.insert_batch([rec("sl-1", 1, m={"mot": 10})])
    assert first.inserted == [("sl-1", 1)] and first.window_duplicates == []
    again = store.insert_batch([rec("sl-1", 7, m={"mot": 99}), rec("sl-1", 8, W + 900)])
    assert again.inserted == [("sl-1", 8)] and again.duplicates == []
    assert again.window_duplicates == [WindowDuplicate("sl-1", 7, "win", W, 900, 1, MOT)]
    assert _rows(db) == [("sl-1", 1, "win", W, 900), ("sl-1", 8, "win", W + 900, 900)]
    assert [r.m for r in ReportQueries(db).reports(device="sl-1")][0] == {"mot": 10}  # the first one's value
    # committed all the same: a re-send is a plain duplicate, counted once, and the replay window knows it
    assert store.has("sl-1", 7) and store.max_seqs() == {"sl-1": 8} and store.seqs_above("sl-1", 0, 10) == [1, 7, 8]
    resent = store.insert_batch([rec("sl-1", 7, m={"mot": 99})])
    assert resent.duplicates == [("sl-1", 7)] and resent.window_duplicates == [] and resent.inserted == []
    assert store.counter("duplicate_windows") == 1
    assert store.outbox_depth == 2 and [m.payload for m in store.outbox_peek(10)] == [b"1", b"8"]  # not published
    store.close()
    out = io.StringIO()
    assert export_chain(db, out) == 2
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [1, 8]  # 7 is not chained
    # its spend (not its measurement) is kept: the ε the device spent on it is still accounted
    assert _not_stored(db) == [("sl-1", 7, "streetlight", "win", W, 900, '{"mot":500}', 1, "%064x" % 7)]


def test_releases_inside_one_batch_and_keys_that_differ(tmp_path: Path) -> None:
    """Within a batch the first wins too; another type, length, device, w or set of ``e`` fields is
    another key (a streetlight's 6-hourly mot release shares w with a 900 s window at 6-hour marks)."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    res = store.insert_batch([
        rec("sl-1", 1), rec("sl-1", 2, l=21600), rec("sl-1", 3, type_="hour", l=3600),
        rec("sl-2", 1), rec("sl-1", 4, W + 900), rec("sl-1", 5), rec("sl-1", 6, l=21600),
        rec("sl-1", 5),  # the same frame twice in a batch: a plain duplicate, not a second window duplicate
        rec("sl-1", 9, m={"mot": 1, "ped": 2}, e={"mot": 250, "ped": 250}),  # other fields: another key
        rec("sl-1", 10, m={"ped": 2, "mot": 1}, e={"ped": 250, "mot": 250}),  # the same fields: not stored
    ])
    assert res.inserted == [("sl-1", 1), ("sl-1", 2), ("sl-1", 3), ("sl-2", 1), ("sl-1", 4), ("sl-1", 9)]
    assert res.window_duplicates == [WindowDuplicate("sl-1", 5, "win", W, 900, 1, MOT),
                                     WindowDuplicate("sl-1", 6, "win", W, 21600, 2, MOT),
                                     WindowDuplicate("sl-1", 10, "win", W, 900, 9, ("mot", "ped"))]
    assert res.duplicates == [("sl-1", 5)]
    assert len(_rows(db)) == 6 and store.counter("duplicate_windows") == 3
    store.close()


def test_aggregates_are_measurements_and_always_stored(tmp_path: Path) -> None:
    """The window aggregate and the mot release at the same (w, l) (a policy releasing mot every window)
    are both stored; a second aggregate for a period (a clock step back) is stored too, and so is a
    second ``hour`` energy report: the firmware closed the hour early and restarted it at zero, so its
    energy is counted nowhere else and the day's sum needs both."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    res = store.insert_batch([agg("sl-1", 1), rec("sl-1", 2), agg("sl-1", 3, W + 900), rec("sl-1", 4, W + 900)])
    assert res.inserted == [("sl-1", s) for s in (1, 2, 3, 4)] and res.window_duplicates == []
    hours = [store.insert_batch([rec("sl-1", s, W, type_="hour", l=3600, m={"wh": wh}, e={})])
             for s, wh in ((5, 40), (6, 30))]
    assert [h.inserted for h in hours] == [[("sl-1", 5)], [("sl-1", 6)]]
    # the clock went back: the aggregate again (stored), the release again (not stored)
    back = store.insert_batch([agg("sl-1", 7, m={"lux": 70, "lvl": 40, "lamp": 0}), rec("sl-1", 8)])
    assert back.inserted == [("sl-1", 7)] and back.window_duplicates == [WindowDuplicate("sl-1", 8, "win", W, 900, 2,
                                                                                          MOT)]
    q = ReportQueries(db)
    assert sum(r.m["wh"] for r in q.reports(device="sl-1") if r.type == "hour") == 70
    assert [r.seq for r in q.reports(device="sl-1") if r.w == W and r.l == 900] == [1, 2, 7]
    q.close()
    store.close()


def test_alarms_and_boot_reports_are_events_and_all_stored(tmp_path: Path) -> None:
    """Two alarms (or two boots) in one minute are two events: nothing is dropped for them."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    minute = W + 120
    res = store.insert_batch([rec("sl-1", 1, minute, type_="alarm", l=60, m={}, e={}, a=["lamp_fail"]),
                              rec("sl-1", 2, minute, type_="alarm", l=60, m={}, e={}, a=["lamp_fail"]),
                              rec("sl-1", 3, minute, type_="boot", l=60, m={}, e={})])
    res2 = store.insert_batch([rec("sl-1", 4, minute, type_="boot", l=60, m={}, e={}),
                               rec("sl-1", 5, minute, type_="alarm", l=60, m={}, e={}, a=["lamp_fail"])])
    assert res.window_duplicates == res2.window_duplicates == []
    assert [s for _, s, *_ in _rows(db)] == [1, 2, 3, 4, 5]
    assert len(ReportQueries(db).alarms(start=minute, end=minute + 60)) == 3
    store.close()


def test_retention_removes_a_field_from_the_spend_of_a_release_not_stored_too(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("sl-1", 1), rec("sl-1", 2)])
    assert store.apply_retention({("streetlight", "mot"): 1}, now=W + 900 + 86400 - 1) == 0
    assert _not_stored(db)[0][6] == '{"mot":500}'
    assert store.apply_retention({("streetlight", "mot"): 1}, now=W + 900 + 86400) == 1
    assert _not_stored(db)[0][6] == "{}"
    store.close()


def test_a_version_2_store_holding_two_releases_of_one_period_opens_and_keeps_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("sl-1", 1), rec("sl-1", 2, W + 900)])
    store.close()
    conn = sqlite3.connect(db)  # as a version 2 gateway left it: the same release stored under seqs 1 and 3
    conn.execute("INSERT INTO reports (device, seq, kind, zone, type, w, l, m, e, a, fw, received_at, gateway_id,"
                  " link, digest) SELECT device, 3, kind, zone, type, w, l, '{\"mot\":3}', e, a, fw, received_at,"
                  " gateway_id, link, digest FROM reports WHERE seq = 1")
    conn.execute("DROP TABLE window_duplicates")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()

    caplog.set_level(logging.WARNING, logger="gateway.storage")
    assert not caplog.records  # a new store is created at the current version: nothing to say
    store = ReportStore(db, gateway_id="gw")
    # the one-way upgrade is said at the open that makes it: before (with the copy made first), and once done
    copy = "%s.schema-v2.bak" % db.resolve()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "report store %s is at schema version 2; migrating to %d (one way: older gateways refuse it afterwards); a "
        "copy of the store as it is now: %s (1 MB) — keep it until the new version runs well, then delete it"
        % (db.resolve(), SCHEMA_VERSION, copy),
        "report store %s upgraded from schema version 2 to %d; gateways older than this one can no longer open it "
        "(the store as it was: %s)" % (db.resolve(), SCHEMA_VERSION, copy)]
    assert [s for _, s, *_ in _rows(db)] == [1, 2, 3]  # nothing lost
    assert store.max_seqs() == {"sl-1": 3}
    res = store.insert_batch([rec("sl-1", 3), rec("sl-1", 4)])  # a re-send of seq 3; a third release of W
    assert res.duplicates == [("sl-1", 3)] and res.inserted == []
    assert res.window_duplicates == [WindowDuplicate("sl-1", 4, "win", W, 900, 1, MOT)]
    store.close()
    ReportStore(db, gateway_id="gw").close()
    # opened again: already current, the migration not logged again; only the reminder that its copy is still there
    assert [r.getMessage() for r in caplog.records[2:]] == [
        "report store %s: %s (less than an hour old, 1 MB): the copy made before a store migration still holds the "
        "store as it was, values retention has since removed included (outside retention): delete it once this "
        "release runs well" % (db.resolve(), copy)]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert conn.execute("SELECT COUNT(*) FROM reports").fetchone() == (3,)
    conn.close()


def _ingest(registry: Registry, db: Path, metrics: GatewayMetrics, gap_hold_s: float = 60.0,
            policy: dict[str, Any] | None = None, log_monotonic: Any = None) -> IngestService:
    return IngestService(store=ReportStore(db, gateway_id="gw", outbox_encoder=_encoder),
                         verifier=Verifier(registry, load_policy() if policy is None else policy), metrics=metrics,
                         batch_ms=20, gap_hold_s=gap_hold_s, log_monotonic=log_monotonic)


def mot_frame(seq: int, w: int, count: int = 7, l: int = 21600) -> bytes:  # noqa: E741
    """A streetlight ``mot`` release frame (the policy's default period: 6 hours)."""
    return report_frame("sl-1", seq, KEYS["sl-1"], kind="streetlight", w=w, l=l, m={"mot": count},
                        e={"mot": 500})


async def test_ingest_acknowledges_a_re_release_counts_and_logs_it_and_stores_the_first(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Seqs 1..3 release periods P, P+6h, P+12h; then the clock went back and seqs 4..6 release them again,
    seq 7 the next period. Every seq is acknowledged (the ACK is not held at the not-stored ones, even
    with a 60 s gap hold), three rows and one chain entry per period, one warning for the burst, and the
    releases held back from it are counted in the line at stop."""
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = _ingest(registry, db, metrics)
    await ingest.start()
    c = Collector()
    caplog.set_level(logging.WARNING, logger="gateway.pipeline.ingest")
    for seq in (1, 2, 3):
        ingest.feed(mot_frame(seq, W + 21600 * (seq - 1)), c.link)
    await _settle(ingest)
    for seq in (4, 5, 6):
        ingest.feed(mot_frame(seq, W + 21600 * (seq - 4)), c.link)
        await _settle(ingest)  # one commit each: the warning is rate-limited across commits
    ingest.feed(mot_frame(7, W + 3 * 21600), c.link)
    await _settle(ingest)
    assert max(s for _, s in c.acks) == 7
    assert metrics.value("civicedge_reports_duplicate_window_total") == 3
    assert metrics.value("civicedge_reports_stored_total") == 4
    assert metrics.value("civicedge_reports_duplicate_total") == 0
    assert [(s, w) for _, s, _, w, _ in _rows(db)] == [(1, W), (2, W + 21600), (3, W + 43200), (7, W + 64800)]
    assert ingest.store.outbox_depth == 4 and ingest.store.counter("duplicate_windows") == 3
    warnings = [r.getMessage() for r in caplog.records if "already stored" in r.getMessage()]
    assert len(warnings) == 1  # one line per minute, naming device, type, fields and period
    assert warnings[0].startswith("sl-1: win release of mot for the period ") and "w=%d, l=21600 s" % W in warnings[0]
    assert "seq 4 acknowledged, not stored" in warnings[0] and "(seq 1)" in warnings[0]
    # a re-send of a not-stored seq (its ACK was lost) is re-acknowledged as a duplicate, not counted again
    ingest.feed(mot_frame(5, W + 21600), c.link)
    await _settle(ingest)
    assert c.acks[-1] == ("sl-1", 7) and metrics.value("civicedge_reports_duplicate_total") == 1
    assert metrics.value("civicedge_reports_duplicate_window_total") == 3
    await ingest.stop()
    ingest.close()
    ingest.store.close()
    ended = [r.getMessage() for r in caplog.records if "since the last such line" in r.getMessage()]
    assert ended == ["2 more release(s) for periods already stored acknowledged, not stored, since the last such "
                     "line"]


async def test_the_warning_counts_every_release_left_out_not_commits(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Batches of several re-releases within the minute: the next line counts the releases held back
    (3 commits of 2 and the others of the logged commit), not the commits."""
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    now = [1000.0]
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=metrics, batch_ms=300, batch_max=1000, gap_hold_s=60.0,
                           log_monotonic=lambda: now[0])
    await ingest.start()
    c = Collector()
    caplog.set_level(logging.WARNING, logger="gateway.pipeline.ingest")
    periods = [W + 21600 * i for i in range(2)]
    seq = 0

    async def commit(n: int) -> None:  # n releases of already released periods in one commit
        nonlocal seq
        for w in periods[:n]:
            seq += 1
            ingest.feed(mot_frame(seq, w), c.link)
        await asyncio.sleep(0)
        await _settle(ingest)

    await commit(2)  # the originals
    await commit(2)  # logged, naming the last and counting the other
    for _ in range(3):
        now[0] += 10
        await commit(2)  # 6 held back
    now[0] += 60
    await commit(2)  # logged: naming the last, 6 + 1 more (the old count was 3 commits + 1 = 4)
    lines = [r.getMessage() for r in caplog.records if "already stored" in r.getMessage()]
    assert len(lines) == 2 and lines[0].endswith("(1 more such release(s) since the last such line)")
    assert lines[1].endswith("(7 more such release(s) since the last such line)")
    assert metrics.value("civicedge_reports_duplicate_window_total") == 10
    await ingest.stop()
    ingest.close()
    ingest.store.close()


async def test_after_a_restart_not_stored_seqs_are_still_settled(registry: Registry, tmp_path: Path) -> None:
    """The ACK floor is persisted lazily: a restart may find it below a seq that was not stored. That seq
    is known from ``window_duplicates``, so the ACK is not held at it as at a gap (60 s hold here)."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("sl-1", 1, l=21600, m={"mot": 3})], {"sl-1": 1})
    # the frame re-sent below, as stored (a re-send is byte-identical: another digest is a reused seq)
    store.insert_batch([rec("sl-1", 2, l=21600, m={"mot": 7})._replace(digest=frame_digest(mot_frame(2, W)))])
    store.close()
    metrics = GatewayMetrics("gw")
    ingest = _ingest(registry, db, metrics)
    await ingest.start()
    c = Collector()
    ingest.feed(mot_frame(3, W + 21600), c.link)
    ingest.feed(mot_frame(2, W), c.link)  # re-sent: the ACK was lost
    await _settle(ingest)
    assert max(s for _, s in c.acks) == 3
    assert metrics.value("civicedge_reports_duplicate_total") == 1
    assert metrics.value("civicedge_reports_duplicate_window_total") == 0
    assert [s for _, s, *_ in _rows(db)] == [1, 3]
    await ingest.stop()
    ingest.close()
    ingest.store.close()


async def test_re_releases_in_one_commit(registry: Registry, tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=metrics, batch_ms=300, batch_max=1000, gap_hold_s=60.0)
    await ingest.start()
    c = Collector()
    for seq, w in ((1, W), (2, W + 21600), (3, W), (4, W + 21600), (5, W + 43200)):
        ingest.feed(mot_frame(seq, w), c.link)
    await asyncio.sleep(0)
    await _settle(ingest)
    assert c.acks == [("sl-1", 5)]  # one commit, one cumulative ACK over the not-stored seqs
    assert [s for _, s, *_ in _rows(db)] == [1, 2, 5]
    assert metrics.value("civicedge_reports_duplicate_window_total") == 2
    await ingest.stop()
    ingest.close()
    ingest.store.close()


async def test_a_policy_releasing_mot_every_window_keeps_aggregate_and_release(
        registry: Registry, tmp_path: Path) -> None:
    """The firmware default and DESIGN's: no ``release_every_s`` (the window, 900 s). Each window the
    streetlight sends its aggregate (lux, lvl, lamp; no e) and its mot release ({mot: 500}) with the
    same (w, l): both are stored. After a clock step back both come again: the aggregate is stored, the
    second mot release is not. Two ``hour`` energy reports for one hour are both stored."""
    policy = copy.deepcopy(load_policy())
    del policy["kinds"]["streetlight"]["fields"]["mot"]["release_every_s"]
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = _ingest(registry, db, metrics, policy=policy)
    await ingest.start()
    c = Collector()
    key = KEYS["sl-1"]

    def aggregate(seq: int, w: int, lux: int) -> bytes:
        return report_frame("sl-1", seq, key, kind="streetlight", w=w, l=900, m={"lux": lux, "lvl": 40, "lamp": 0},
                            e={})

    frames = [aggregate(1, W, 10), mot_frame(2, W, 5, l=900), aggregate(3, W + 900, 20), mot_frame(4, W + 900, 6, l=900),
              report_frame("sl-1", 5, key, kind="streetlight", t="hour", w=W, l=3600, m={"wh": 40}, e={}),
              # the clock went back into the first window and the hour: all again, under new seqs
              aggregate(6, W, 30), mot_frame(7, W, 9, l=900),
              report_frame("sl-1", 8, key, kind="streetlight", t="hour", w=W, l=3600, m={"wh": 25}, e={})]
    for frame in frames:
        ingest.feed(frame, c.link)
        await _settle(ingest)
    assert max(s for _, s in c.acks) == 8
    assert [s for _, s, *_ in _rows(db)] == [1, 2, 3, 4, 5, 6, 8]
    assert metrics.value("civicedge_reports_duplicate_window_total") == 1
    q = ReportQueries(db)
    mot = [r.m["mot"] for r in q.reports(device="sl-1") if "mot" in r.m]
    assert mot == [5, 6]  # one published value per period: the first
    assert sum(r.m["wh"] for r in q.reports(device="sl-1") if r.type == "hour") == 65
    q.close()
    await ingest.stop()
    ingest.close()
    ingest.store.close()
    assert [row[1] for row in _not_stored(db)] == [7]


def test_a_window_duplicates_table_of_the_first_version_3_build_gets_its_kind_and_spend_columns(
        tmp_path: Path) -> None:
    """A development build of version 3 made the table without ``kind`` and ``e``; CREATE ... IF NOT
    EXISTS left it so, and every repeated release then failed its whole batch (and retention failed)."""
    db = tmp_path / "r.sqlite"
    ReportStore(db, gateway_id="gw").close()
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE window_duplicates")
    conn.execute("CREATE TABLE window_duplicates (device TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,"
                 " w INTEGER NOT NULL, l INTEGER NOT NULL, kept_seq INTEGER NOT NULL, digest TEXT NOT NULL,"
                 " received_at REAL NOT NULL, gateway_id TEXT NOT NULL, link TEXT NOT NULL, PRIMARY KEY (device, seq))")
    conn.execute("INSERT INTO window_duplicates VALUES ('sl-1', 3, 'win', ?, 900, 1, 'd', 1.0, 'gw', 'x')", (W,))
    conn.commit()
    conn.close()
    store = ReportStore(db, gateway_id="gw")
    assert store.insert_batch([rec("sl-1", 1)]).inserted == [("sl-1", 1)]
    assert store.insert_batch([rec("sl-1", 2)]).window_duplicates == [WindowDuplicate("sl-1", 2, "win", W, 900, 1, MOT)]
    store.apply_retention({("streetlight", "mot"): 1}, W + 10 * 86400)  # failed on the missing e column
    store.close()
    assert [row[:2] + row[6:7] for row in _not_stored(db)] == [("sl-1", 2, "{}"), ("sl-1", 3, "{}")]


def test_a_release_suppressed_below_k_is_the_periods_release(tmp_path: Path) -> None:
    """A release whose noisy value fell below k has its spend and no value; it is the period's release: a
    later value for that period would be published beside what the first already revealed (below k)."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    assert store.insert_batch([rec("sl-1", 1, m={})]).inserted == [("sl-1", 1)]
    later = store.insert_batch([rec("sl-1", 2, m={"mot": 12})])
    assert later.inserted == [] and later.window_duplicates == [WindowDuplicate("sl-1", 2, "win", W, 900, 1, MOT)]
    store.close()
    assert [r.m for r in ReportQueries(db).reports(device="sl-1")] == [{}]


async def test_another_frame_under_a_seq_recorded_only_as_a_window_duplicate_is_seq_reused(
        registry: Registry, tmp_path: Path) -> None:
    """A seq recorded only in ``window_duplicates`` (no report row) is committed with its frame digest: another
    frame under it is a restarted counter, refused as seq_reused and never acknowledged, both from the digest
    ingest keeps in memory and, after a restart, from the store; the device's own re-send stays a duplicate."""
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    c = Collector()
    other = report_frame("sl-1", 3, KEYS["sl-1"], kind="streetlight", w=W + 900 * 40)
    for restart in (False, True):
        ingest = _ingest(registry, db, metrics)
        await ingest.start()
        if not restart:
            for seq in (1, 2):
                ingest.feed(mot_frame(seq, W + 21600 * (seq - 1)), c.link)
            await _settle(ingest)
            ingest.feed(mot_frame(3, W), c.link)  # the clock went back: seq 1's period again
            await _settle(ingest)
            assert metrics.value("civicedge_reports_duplicate_window_total") == 1
        acked = len(c.acks)
        ingest.feed(other, c.link)
        await _settle(ingest)
        assert len(c.acks) == acked  # never acknowledged
        assert metrics.value("civicedge_rejections_total", {"reason": "seq_reused"}) == 1 + restart
        ingest.feed(mot_frame(3, W), c.link)  # the device's own re-send
        await _settle(ingest)
        assert len(c.acks) == acked + 1 and metrics.value("civicedge_reports_duplicate_total") == 1 + restart
        await ingest.stop()
        ingest.close()
        ingest.store.close()
    assert [s for _, s, _, _, _ in _rows(db)] == [1, 2]
