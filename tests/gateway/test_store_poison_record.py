"""One record that always makes the store code raise (a bug, not a StorageError) fails alone.

Before: the whole batch failed as a commit failure every time, so the reports of other devices
committed in the same batches as the poison record were never stored or acknowledged while it kept
arriving. Now a batch failing with an unexpected error is retried in halves (bounded, down to single
records): the others are stored and acknowledged, only the poison record fails (not acknowledged, the
device re-sends it). A StorageError (disk full, locked) is about the store, not a record: not split.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
from conftest import KEYS
from helpers import CountingIngestRig, report_frame

from gateway.errors import StorageError
from gateway.pipeline import ingest as ingest_module
from gateway.pipeline import ingest_writer
from gateway.registry import Registry
from gateway.storage import ReportRecord, provenance
from gateway.storage import store as store_module

POISON = ("bin-2", 3)


class _Rig(CountingIngestRig):
    """A real IngestService on a real store file, a link that records the ACKs, a settable monotonic clock."""

    def __init__(self, registry: Registry, path: Path) -> None:
        self.now = 1000.0
        super().__init__(registry, path, batch_ms=10, gap_hold_s=15.0, monotonic=lambda: self.now,
                         log_monotonic=lambda: 0.0)  # rate-limited lines: one per test (a burst)

    async def send(self, *frames: tuple[str, int]) -> None:
        """Feed the frames at once (one batch), then wait until everything is settled."""
        for dev, seq in frames:
            kind = "streetlight" if dev.startswith("sl") else "bin"
            self.ingest.feed(report_frame(dev, seq, KEYS[dev], kind), self.link)
        for _ in range(300):
            await asyncio.sleep(0.01)
            if not self.ingest._tasks and self.ingest._queue.empty():  # noqa: SLF001 - nothing in flight
                return
        raise AssertionError("ingest did not settle")


@pytest.fixture
async def rig(registry: Registry, tmp_path: Path) -> AsyncIterator[_Rig]:
    r = _Rig(registry, tmp_path / "r.sqlite")
    await r.ingest.start()
    try:
        yield r
    finally:
        await r.ingest.stop()
        r.ingest.close()
        r.store.close()


def _poison(monkeypatch: pytest.MonkeyPatch, exc: Callable[[], Exception]) -> None:
    """Make the store's row building raise ``exc()`` for the POISON record, every time (a deterministic bug)."""
    real = store_module.report_row

    def report_row(rec: ReportRecord, gateway_id: str) -> tuple[Any, ...]:
        if (rec.device, rec.seq) == POISON:
            raise exc()
        return real(rec, gateway_id)

    monkeypatch.setattr(store_module, "report_row", report_row)


def _chain_verifies(rig: _Rig) -> int:
    out = io.StringIO()
    summary = provenance.export_chain_summary(rig.path, out)
    verified = provenance.verify_export_summary(out.getvalue().splitlines())
    assert verified == summary
    # the store's in-memory head (the next entry links to it) is the one committed, not a rolled-back half's
    assert (rig.store._chain_pos, rig.store._chain_head) == (summary.count, summary.head)  # noqa: SLF001
    return summary.count


async def test_only_the_poison_record_fails_the_rest_of_its_batch_is_stored_and_acknowledged(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    _poison(monkeypatch, lambda: KeyError("a bug"))
    batch = [("bin-1", 1), ("bin-2", 1), ("bin-1", 2), ("bin-2", 2), ("bin-2", 3), ("bin-1", 3), ("bin-2", 4),
             ("sl-1", 1)]
    await rig.send(*batch)
    assert rig.stored() == set(batch) - {POISON}
    # bin-2 seq 4 is stored, but ACKs never pass the seq that failed: the device must keep it
    assert rig.acked == {"bin-1": 3, "bin-2": 2, "sl-1": 1}
    n = len(batch)
    assert rig.commits <= 2 * math.ceil(math.log2(n)) + 1, rig.commits   # bisection, not one commit per record
    assert rig.metrics.value("civicedge_store_report_failures_total") == 1  # counted per failure
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 0  # not a failing commit (it pages)
    assert rig.metrics.value("civicedge_reports_stored_total") == n - 1
    # one report failing alone is not an outage (commits_failing: nothing stored): reports_failing, a warning
    assert rig.ingest.store_problem is None
    problem = rig.ingest.reports_problem
    assert problem is not None and "bin-2 seq 3 (KeyError, failed 1 time(s)" in problem, problem
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert len(errors) == 1 and "bin-2 seq 3" in errors[0].getMessage(), [r.getMessage() for r in errors]
    assert all(KEYS["bin-2"].hex() not in r.getMessage() for r in caplog.records)
    assert _chain_verifies(rig) == n - 1

    # The device keeps re-sending 3 (and 4, unacknowledged) past the gap hold: the ACK still does not pass 3,
    # the failure is logged once per burst and counted.
    for _ in range(3):
        rig.now += 10.0
        await rig.send(("bin-2", 3), ("bin-2", 4))
        assert rig.acked["bin-2"] == 2
    assert rig.metrics.value("civicedge_store_report_failures_total") == 4  # counted per failure
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 0  # not a failing commit (it pages)
    assert len([r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]) == 1

    # A later batch without the poison record is stored and acknowledged (bin-2 still held below 3).
    commits = rig.commits
    await rig.send(("bin-1", 4), ("bin-2", 5), ("sl-1", 2))
    assert rig.commits == commits + 1
    assert rig.acked == {"bin-1": 4, "bin-2": 2, "sl-1": 2}
    assert rig.ingest.store_problem is None
    assert "succeed again" not in caplog.text  # commits never failed as a whole
    problem = rig.ingest.reports_problem
    assert problem is not None and "bin-2 seq 3 (KeyError, failed 4 time(s) in 30 s)" in problem, problem

    # The bug fixed (an upgrade): the device's re-send of 3 is stored, and the ACK moves past everything.
    monkeypatch.undo()
    await rig.send(("bin-2", 3), ("bin-2", 4), ("bin-2", 5))
    assert POISON in rig.stored() and rig.acked["bin-2"] == 5
    assert rig.ingest.reports_problem is None  # stored: resolved
    assert _chain_verifies(rig) == n + 3


async def test_a_storage_error_is_not_split(rig: _Rig, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    _poison(monkeypatch, lambda: StorageError("storing failed: database or disk is full", reason="write_failed"))
    await rig.send(("bin-1", 1), ("bin-2", 1), ("bin-2", 2), ("bin-2", 3), ("bin-1", 2))
    assert rig.commits == 1                   # about the store, not a record: one commit, not retried in parts
    assert rig.stored() == set() and rig.acked == {}
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 1
    problem = rig.ingest.store_problem
    assert problem is not None and "disk is full" in problem and "nothing acknowledged meanwhile" in problem
    assert _chain_verifies(rig) == 0
    monkeypatch.undo()
    await rig.send(("bin-1", 1), ("bin-2", 1), ("bin-2", 2), ("bin-2", 3), ("bin-1", 2))
    assert rig.acked == {"bin-1": 2, "bin-2": 3} and _chain_verifies(rig) == 5


async def test_a_bug_every_record_sets_off_costs_a_bounded_number_of_commits(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    real = store_module.report_row

    def report_row(rec: ReportRecord, gateway_id: str) -> tuple[Any, ...]:
        if rec.device == "bin-1":
            raise TypeError("a bug")
        return real(rec, gateway_id)

    monkeypatch.setattr(store_module, "report_row", report_row)
    n = 40
    await rig.send(*[("bin-1", s) for s in range(1, n + 1)])
    assert rig.stored() == set() and rig.acked == {}
    # split at most 2 * bit_length times (2 commits each), not down to every record (2n - 1 commits)
    assert rig.commits <= 1 + 2 * 2 * n.bit_length() < 2 * n - 1, rig.commits
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 1
    monkeypatch.undo()
    await rig.send(*[("bin-1", s) for s in range(1, n + 1)])
    assert rig.acked == {"bin-1": n} and _chain_verifies(rig) == n


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]


async def test_a_total_outage_after_a_poison_record_says_nothing_is_acknowledged(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was (review of b1a4b49, M2): once a batch had failed in part, every later failing commit kept saying "for
    some reports: the others are stored and acknowledged", a full disk storing nothing at all included."""
    full = [False]
    real = store_module.report_row

    def report_row(rec: ReportRecord, gateway_id: str) -> tuple[Any, ...]:
        if full[0]:
            raise StorageError("storing failed: database or disk is full", reason="write_failed")
        if (rec.device, rec.seq) == POISON:
            raise KeyError("a bug")
        return real(rec, gateway_id)

    monkeypatch.setattr(store_module, "report_row", report_row)
    await rig.send(("bin-2", 1), ("bin-2", 2), ("bin-2", 3), ("sl-1", 1), ("bin-1", 1), ("sl-1", 2))
    assert rig.stored() == {("bin-2", 1), ("bin-2", 2), ("sl-1", 1), ("bin-1", 1), ("sl-1", 2)}
    acked = dict(rig.acked)
    full[0] = True  # the disk fills: every batch fails whole
    for seq in (2, 3):
        rig.now += 20.0
        await rig.send(("bin-1", seq), ("sl-1", seq + 1))
    assert rig.acked == acked and rig.stored() == {("bin-2", 1), ("bin-2", 2), ("sl-1", 1), ("bin-1", 1),
                                                  ("sl-1", 2)}
    problem = rig.ingest.store_problem
    assert problem == ("report store commits failing (2 in a row, nothing acknowledged meanwhile): storing failed: "
                       "database or disk is full"), problem
    full[0] = False
    await rig.send(("bin-1", 2), ("sl-1", 3))
    assert rig.ingest.store_problem is None and rig.acked["bin-1"] == 2


async def test_a_poison_record_resent_between_clean_batches_is_one_warning_not_a_flapping_outage(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Was (review of b1a4b49, L1): each re-send of the poison record (alone, its device re-sends it every few
    seconds) failed "a commit" and the clean batch after it "succeeded again": every cycle a traceback, a second
    ERROR, a WARNING, and /healthz flipping to critical commits_failing (nothing acknowledged) and back."""
    caplog.set_level(logging.INFO)
    _poison(monkeypatch, lambda: KeyError("a bug"))
    await rig.send(("bin-2", 1), ("bin-2", 2), ("bin-2", 3), ("sl-1", 1))
    for i in range(5):
        rig.now += 6.0
        await rig.send(POISON)  # alone in its batch
        assert rig.ingest.store_problem is None, (i, rig.ingest.store_problem)
        problem = rig.ingest.reports_problem
        assert problem is not None and problem.startswith("1 report(s) fail alone with an unexpected error") \
            and "bin-2 seq 3 (KeyError, failed %d time(s) in %.0f s)" % (i + 2, 6.5 * i + 6.0) in problem, problem
        rig.now += 0.5
        await rig.send(("sl-1", 2 + i))
        assert rig.ingest.store_problem is None and rig.ingest.reports_problem == problem
    assert rig.acked == {"bin-2": 2, "sl-1": 6}
    assert rig.metrics.value("civicedge_store_report_failures_total") == 6  # counted per failure
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 0  # not a failing commit (it pages)
    assert len(_tracebacks(caplog)) == 1  # one per device per POISON_LOG_EVERY_S (the log clock stands still here)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and not r.exc_info], \
        [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    # Past the per-device limit the next failure is logged again, with the count since.
    rig.ingest._poison_warnings["bin-2"].limit.reset()  # noqa: SLF001 - as POISON_LOG_EVERY_S passing does
    await rig.send(POISON)
    assert len(_tracebacks(caplog)) == 2
    assert "bin-2 seq 3 (5 more such failure(s) of this device since the last such line)" in \
        _tracebacks(caplog)[-1].getMessage()

    monkeypatch.undo()  # the bug fixed: the re-send is stored, the problem resolved
    await rig.send(POISON)
    assert rig.ingest.reports_problem is None and rig.acked["bin-2"] == 3


async def test_a_poison_record_is_forgotten_once_given_up_or_no_longer_re_sent(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    _poison(monkeypatch, lambda: KeyError("a bug"))
    await rig.send(("bin-2", 1), ("bin-2", 2), ("bin-2", 3), ("bin-2", 4), ("sl-1", 1))
    assert rig.ingest.reports_problem is not None
    # not re-sent past the gap hold (bin-2 sends no 'h'): its gap is given up, the ACK floor passes it
    rig.now += 20.0
    await rig.send(("bin-2", 5))
    assert rig.acked["bin-2"] == 5 and rig.ingest.reports_problem is None

    await rig.send(("sl-1", 2), ("bin-1", 1))
    rig.now += 1.0
    _poison_also(monkeypatch, ("bin-1", 2))
    await rig.send(("bin-1", 2), ("sl-1", 3))
    assert rig.ingest.reports_problem is not None and "bin-1 seq 2" in rig.ingest.reports_problem
    rig.now += ingest_module.POISON_FORGET_S + 1  # its device stopped sending it (no gap above it to give up)
    assert rig.ingest.reports_problem is None


async def test_reports_failing_alone_are_kept_bounded(rig: _Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    real = store_module.report_row

    def report_row(rec: ReportRecord, gateway_id: str) -> tuple[Any, ...]:
        if rec.device == "bin-2":
            raise KeyError("a bug")
        return real(rec, gateway_id)

    monkeypatch.setattr(store_module, "report_row", report_row)
    n = ingest_module.POISON_MAX + 6
    for seq in range(1, n + 1):
        await rig.send(("bin-2", seq), ("sl-1", seq))
    problem = rig.ingest.reports_problem
    assert problem is not None and problem.startswith("%d report(s) fail alone" % ingest_module.POISON_MAX), problem
    # the least recently failed are forgotten first; the first five still failing are named
    assert "bin-2 seq 7 (KeyError" in problem and "bin-2 seq 6 " not in problem
    assert problem.count("bin-2 seq") == 5 and "and %d more" % (ingest_module.POISON_MAX - 5) in problem
    assert rig.ingest.store_problem is None and rig.acked == {"sl-1": n}


async def test_a_bug_every_report_sets_off_at_one_report_a_batch_is_still_an_outage(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone report failing right after a commit that stored its reports is taken as failing alone; a second
    new one in a row is not: nothing is stored (low traffic, a batch per report), so commits_failing."""
    await rig.send(("sl-1", 1))
    real = store_module.report_row

    def report_row(rec: ReportRecord, gateway_id: str) -> tuple[Any, ...]:
        raise TypeError("a bug")

    monkeypatch.setattr(store_module, "report_row", report_row)
    await rig.send(("bin-1", 1))
    assert rig.ingest.store_problem is None and rig.ingest.reports_problem is not None
    await rig.send(("bin-2", 1))
    problem = rig.ingest.store_problem
    assert problem is not None and "nothing acknowledged meanwhile" in problem and "TypeError" in problem, problem
    await rig.send(("bin-1", 1))  # the first one re-sent: known to fail alone, not one more failing commit
    assert rig.ingest.store_problem == problem
    monkeypatch.undo()
    await rig.send(("bin-2", 1), ("bin-1", 1))
    assert rig.ingest.store_problem is None and rig.ingest.reports_problem is None
    assert rig.acked == {"sl-1": 1, "bin-1": 1, "bin-2": 1}


async def test_ack_floors_of_a_commit_cancelled_at_stop_are_saved(rig: _Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was (review of b1a4b49, L2): the commit took the unsaved ACK floors; stop() timing out cancelled it during
    the split of a batch with a poison record, before any part committed, and the floors were lost (stop saved
    nothing: the next start re-acknowledged from older floors)."""
    await rig.send(("bin-1", 1), ("bin-1", 2))  # bin-1's floor 2: saved with the next commit
    assert await rig.ingest.run_in_store(rig.store.ack_floors) == {}
    _poison(monkeypatch, lambda: KeyError("a bug"))
    real = rig.store.insert_batch

    def slow(records: list[ReportRecord], floors: dict[str, int] | None = None) -> Any:
        time.sleep(0.2)
        return real(records, floors)

    monkeypatch.setattr(rig.store, "insert_batch", slow)
    for dev, seq in (("bin-2", 3), ("bin-2", 1), ("sl-1", 1), ("bin-1", 3)):
        rig.ingest.feed(report_frame(dev, seq, KEYS[dev], "streetlight" if dev.startswith("sl") else "bin"),
                        rig.link)
    await asyncio.sleep(0.05)
    await rig.ingest.stop(timeout=0.3)  # the whole batch failed (0.2 s), its first half is being committed
    assert rig.stored() == {("bin-1", 1), ("bin-1", 2)}  # no part of the batch committed
    assert await rig.ingest.run_in_store(rig.store.ack_floors) == {"bin-1": 2}


def _poison_also(monkeypatch: pytest.MonkeyPatch, key: tuple[str, int]) -> None:
    """Make the store's row building raise a KeyError for ``key`` too."""
    real = store_module.report_row

    def report_row(rec: ReportRecord, gateway_id: str) -> tuple[Any, ...]:
        if (rec.device, rec.seq) == key:
            raise KeyError("a bug")
        return real(rec, gateway_id)

    monkeypatch.setattr(store_module, "report_row", report_row)


async def test_a_store_failing_after_parts_committed_says_how_many_the_latest_commit_stored(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    real = store_module.report_row

    def report_row(rec: ReportRecord, gateway_id: str) -> tuple[Any, ...]:
        if (rec.device, rec.seq) == POISON:
            raise KeyError("a bug")
        if rec.device == "sl-1":  # the disk fills while the halves are committed
            raise StorageError("storing failed: database or disk is full", reason="write_failed")
        return real(rec, gateway_id)

    monkeypatch.setattr(store_module, "report_row", report_row)
    await rig.send(("bin-1", 1), ("bin-1", 2), ("bin-2", 3), ("sl-1", 1))
    assert rig.stored() == {("bin-1", 1), ("bin-1", 2)} and rig.acked == {"bin-1": 2}
    assert rig.ingest.store_problem == (
        "report store commits failing (1 in a row; the latest stored 2 of its 4 reports, then the store failed: the "
        "others are not acknowledged): storing failed: database or disk is full")
    await rig.send(("sl-1", 1))
    assert rig.ingest.store_problem == ("report store commits failing (2 in a row, nothing acknowledged meanwhile): "
                                        "storing failed: database or disk is full")


async def test_a_report_known_to_fail_alone_is_set_aside_not_split_out_of_every_batch(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was (review L3): each re-send of a report known to fail alone, landing in a batch of others, failed that
    batch and split it again (about 2 * log2(n) + 1 commits, each good part with an fsync). Now it is set
    aside before the batch's first commit: one commit of the others, one attempt of it alone."""
    _poison(monkeypatch, lambda: KeyError("a bug"))
    await rig.send(("bin-2", 1), ("bin-2", 2), POISON, ("sl-1", 1))
    assert rig.stored() == {("bin-2", 1), ("bin-2", 2), ("sl-1", 1)}
    others = [("bin-1", s) for s in range(1, 5)] + [("sl-1", s) for s in range(2, 6)]
    commits = rig.commits
    rig.now += 5.0
    await rig.send(*others[:4], POISON, ("bin-2", 4), *others[4:])
    assert rig.commits == commits + 2, rig.commits - commits
    assert rig.stored() == {("bin-2", 1), ("bin-2", 2), ("sl-1", 1), ("bin-2", 4), *others}
    assert rig.acked == {"bin-1": 4, "bin-2": 2, "sl-1": 5}  # never past the failing one
    assert rig.metrics.value("civicedge_store_report_failures_total") == 2
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 0
    assert rig.ingest.store_problem is None
    problem = rig.ingest.reports_problem
    assert problem is not None and "bin-2 seq 3 (KeyError, failed 2 time(s) in 5 s)" in problem, problem

    monkeypatch.undo()  # the bug fixed: set aside again, it commits alone after the others, in one attempt
    commits = rig.commits
    await rig.send(("bin-1", 5), POISON, ("bin-2", 4), ("bin-2", 5), ("sl-1", 6))
    assert rig.commits == commits + 2
    assert rig.acked == {"bin-1": 5, "bin-2": 5, "sl-1": 6} and POISON in rig.stored()
    assert rig.ingest.reports_problem is None
    assert _chain_verifies(rig) == len(rig.stored()) == 16


async def test_only_reports_failing_alone_are_recorded_as_such_a_part_left_whole_is_a_failing_commit(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Was (review L4): past the split's limit (here 1 report failing alone isolated per batch), the good reports
    of a part left whole were recorded as failing alone (reports_failing, the map bounded at 64 they could fill),
    counted as report failures and logged as failing alone: no failing commit, so no page."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(ingest_writer, "SPLIT_ISOLATES", 1)
    _poison(monkeypatch, lambda: KeyError("a bug"))
    _poison_also(monkeypatch, ("sl-1", 3))
    batch = [("bin-2", 1), POISON, ("bin-2", 4), ("bin-1", 1), ("sl-1", 1), ("sl-1", 2), ("sl-1", 3), ("sl-1", 4)]
    await rig.send(*batch)
    stored = rig.stored()
    assert POISON not in stored and ("sl-1", 3) not in stored and ("bin-2", 1) in stored
    left_whole = set(batch) - stored - {POISON}
    assert ("sl-1", 3) in left_whole and len(left_whole) > 1
    assert set(rig.ingest._poisoned) == {POISON}  # noqa: SLF001
    assert rig.metrics.value("civicedge_store_report_failures_total") == 1
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 1  # pages: a bug it did not isolate
    problem = rig.ingest.reports_problem
    assert problem is not None and problem.startswith("1 report(s) fail alone") and "bin-2 seq 3" in problem
    problem = rig.ingest.store_problem
    assert problem is not None and "then a part of it failed unsplit" in problem, problem
    bugs = [r.getMessage() for r in _tracebacks(caplog)]
    assert len(bugs) == 2 and "a part of it not split further: 1 report(s) failing alone were isolated already" \
        in bugs[0] and "bin-2 seq 3" in bugs[1], bugs
    assert all(("sl-1 seq %d" % seq) not in bugs[1] for _, seq in left_whole)
    assert _chain_verifies(rig) == len(stored)

    monkeypatch.undo()  # the next commit storing everything ends the failing commits
    await rig.send(*sorted(left_whole), POISON)
    assert rig.ingest.store_problem is None and rig.ingest.reports_problem is None
    assert "report store commits succeed again, after 1 failed commit(s)" in caplog.text
    assert rig.stored() == set(batch)
