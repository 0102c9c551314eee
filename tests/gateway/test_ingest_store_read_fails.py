"""A report whose seq needs a store read (a re-send of a seq whose digest is not kept in memory, or a seq at or
below the newest committed one) while the store cannot be read: not acknowledged (the device re-sends it),
counted in ``civicedge_store_commit_failures_total``, one ERROR line per interval with the reason, and no
handler task dying with the StorageError ("Task exception was never retrieved" and a traceback per frame).

The store is made to fail for real: the running service's ReportStore is closed (its public ``close()``), so
its reads raise sqlite3's own error, turned into a ``read_failed`` StorageError by the store as an I/O error
would be; no method is patched, so the test goes through the store's real error path."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import pytest
from conftest import KEYS
from helpers import AckLog, report_frame, settle

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Verifier
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportStore

FAILURES = "civicedge_store_commit_failures_total"


class Clock:
    """The log clock: moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ingest(registry: Registry, db: Path, metrics: GatewayMetrics, log_clock: Clock) -> IngestService:
    # a gap below a stored seq is held (not given up): the ACK floor stays below it
    return IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                         metrics=metrics, batch_ms=10, gap_hold_s=3600.0, log_monotonic=log_clock)


def _read_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gateway.pipeline.ingest" and r.levelno == logging.ERROR
            and "reading the report store failed" in r.getMessage()]


def _unretrieved(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    gc.collect()  # a task that died with an exception nobody retrieved logs it when collected
    return [r for r in caplog.records if r.name == "asyncio" or "never retrieved" in r.getMessage()]


async def test_re_sends_needing_a_failing_store_read_are_counted_logged_once_and_not_acknowledged(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Was: each such frame's handler task died with the StorageError: asyncio logged "Task exception was never
    retrieved" with a traceback per re-sent frame, nothing counted. Test fails before."""
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    clock = Clock()
    ingest = _ingest(registry, db, metrics, clock)
    await ingest.start()
    a = AckLog("serial:readfail")
    ingest.feed(report_frame("bin-1", 5, KEYS["bin-1"]), a.link)  # 1..4 missing: the floor stays at 0
    await settle(ingest)
    await ingest.stop()
    ingest.close()
    ingest.store.close()

    ingest = _ingest(registry, db, metrics, clock)  # seq 5 above the floor: loaded into recent, digest unknown
    await ingest.start()
    assert dict(ingest._windows["bin-1"].recent.items()) == {5: None}  # noqa: SLF001 - the path this is about
    ingest.store.close()  # the store fails: every read raises
    caplog.clear()
    a.sent.clear()
    before = metrics.value(FAILURES)
    # re-sends of seq 5 (digest asked of the store) and a seq below the newest committed (stored or not: asked)
    frames = [report_frame("bin-1", 5, KEYS["bin-1"])] * 3 + [report_frame("bin-1", 2, KEYS["bin-1"])]
    for raw in frames:
        ingest.feed(raw, a.link)
        await settle(ingest)
    assert a.sent == []  # not acknowledged: the device keeps them and re-sends
    assert metrics.value(FAILURES) == before + 4
    assert metrics.value("civicedge_reports_duplicate_total") == 0
    assert metrics.value("civicedge_rejections_total", {"reason": "seq_reused"}) == 0
    win = ingest._windows["bin-1"]  # noqa: SLF001 - nothing left behind for them
    assert not win.pending and ingest.backlog == 0 and ingest.room.is_set()
    errors = _read_errors(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]  # one line per interval, not one per frame
    line = errors[0].getMessage()
    assert "bin-1 seq 5" in line and "serial:readfail" in line and "reason read_failed" in line
    assert "not acknowledged" in line
    assert errors[0].exc_info is None  # the reason, not a traceback
    assert _unretrieved(caplog) == []

    clock.now += 11.0  # the next interval: one more line, counting those held back
    ingest.feed(report_frame("bin-1", 5, KEYS["bin-1"]), a.link)
    await settle(ingest)
    errors = _read_errors(caplog)
    assert len(errors) == 2
    assert "(3 more such failed read(s) since the last such line)" in errors[1].getMessage()
    assert metrics.value(FAILURES) == before + 5
    assert a.sent == []
    assert _unretrieved(caplog) == []
    await ingest.stop()  # its floors cannot be saved into the closed store: a warning, the stop goes on
    ingest.close()


async def test_a_bug_in_a_handler_task_is_logged_once_a_burst_with_its_traceback(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error (not a StorageError: a bug, as the ValueError fixed in 7d2f01b) in the task handling a
    re-send: the frame is not acknowledged, the traceback logged once per interval, never "never retrieved".
    The store's one read is patched (no real store read raises a bug on purpose)."""
    caplog.set_level(logging.DEBUG)
    metrics = GatewayMetrics("gw")
    clock = Clock()
    ingest = _ingest(registry, tmp_path / "r.sqlite", metrics, clock)
    await ingest.start()
    a = AckLog("serial:readfail")
    ingest.feed(report_frame("bin-1", 5, KEYS["bin-1"]), a.link)
    await settle(ingest)
    a.sent.clear()

    def bug(*_args: object) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ingest.store, "committed_digest", bug)
    caplog.clear()
    for _ in range(3):
        ingest.feed(report_frame("bin-1", 3, KEYS["bin-1"]), a.link)  # below the newest committed: asked
        await settle(ingest)
    assert a.sent == []
    bugs = [r for r in caplog.records if r.name == "gateway.pipeline.ingest" and r.levelno == logging.ERROR]
    assert len(bugs) == 1, [r.getMessage() for r in bugs]
    assert "bin-1 seq 3" in bugs[0].getMessage() and "civicedge bug" in bugs[0].getMessage()
    assert bugs[0].exc_info is not None and bugs[0].exc_info[0] is RuntimeError
    assert metrics.value(FAILURES) == 0  # a bug, not the store failing
    assert ingest.backlog == 0
    assert _unretrieved(caplog) == []
    await ingest.stop()
    ingest.close()
    ingest.store.close()
