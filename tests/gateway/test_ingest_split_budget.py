"""The split of a batch failing with an unexpected error isolates a fixed number of reports, at any batch size.

Before: the budget was ``2 * len(batch).bit_length()`` splits, written for ``batch_max = 200``. With 2000 (the
default since) it isolated about two reports failing alone: with a third, a part of about 250 good reports
failed with it, unacknowledged and logged as failed (their devices re-send them). Now the budget is what any
:data:`SPLIT_ISOLATES` (8) such reports need wherever they are in the batch, and the split stops once that
many failed alone, so a bug every report sets off still costs few commits. Splitting one batch also stops after
SPLIT_TIME_S (slow storage), and only the reports that failed alone are recorded and counted as such: a part
the split left whole is a failing commit.
"""

from __future__ import annotations

import asyncio
import io
import itertools
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from helpers import CountingIngestRig, report_frame

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Verifier
from gateway.pipeline import ingest_writer
from gateway.pipeline.ingest_writer import SPLIT_ISOLATES, split_budget
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportRecord, ReportStore, provenance
from gateway.storage import store as store_module

DEVICES = ["bin-%d" % i for i in range(20)]
PER_DEVICE = 100
BATCH = len(DEVICES) * PER_DEVICE  # 2000: [storage] batch_max's default, one batch
# (device, seq) in feed order: seq 1 of every device, then seq 2, ...
ORDER = [(dev, seq) for seq in range(1, PER_DEVICE + 1) for dev in DEVICES]
# Eight positions needing the whole budget (143 commits; found by a search over random placements): each
# bad report in another part down to parts of 250, and never two in one part below that.
WORST_EIGHT = (231, 425, 726, 959, 1055, 1279, 1596, 1855)


def _key(dev: str) -> bytes:
    first = int(dev.split("-")[1])
    return bytes((first + i) % 256 for i in range(32))


class _Rig(CountingIngestRig):
    """A real IngestService on a real store (batch_max 2000), the ACKs recorded per device, commits counted."""

    def __init__(self, path: Path) -> None:
        registry = Registry(path / "registry")
        for dev in DEVICES:
            registry.add(dev, kind="bin", zone="north", lat="52.37", lon="4.89", key=_key(dev))
        # batch_ms far above the feed time: the 2000 reports are one batch (it is taken once it is full)
        super().__init__(registry, path / "r.sqlite", batch_ms=5000, batch_max=BATCH)

    async def send_batch(self) -> None:
        """Feed the 2000 reports at once (one batch) and wait until all are committed or failed, and ACKed."""
        for dev, seq in ORDER:
            self.ingest.feed(report_frame(dev, seq, _key(dev), "bin"), self.link)
        # a ceiling for a loaded machine, not a timing assumption: returns as soon as everything settled
        async with asyncio.timeout(120):
            while self.ingest._tasks or not self.ingest._queue.empty():  # noqa: SLF001 - nothing in flight
                await asyncio.sleep(0.01)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[_Rig]:
    r = _Rig(tmp_path)
    await r.ingest.start()
    try:
        yield r
    finally:
        await r.ingest.stop()
        r.ingest.close()
        r.store.close()


def _poison(monkeypatch: pytest.MonkeyPatch, bad: set[tuple[str, int]]) -> None:
    """Make the store raise a KeyError (a bug, not a StorageError) for the ``bad`` reports, every time."""
    real = store_module.report_row

    def report_row(rec: ReportRecord, gateway_id: str) -> tuple[Any, ...]:
        if (rec.device, rec.seq) in bad:
            raise KeyError("a bug")
        return real(rec, gateway_id)

    monkeypatch.setattr(store_module, "report_row", report_row)


def _expected_acks(bad: set[tuple[str, int]]) -> dict[str, int]:
    """Each device acknowledged up to its last report, or below its first failing one."""
    acks = {dev: PER_DEVICE for dev in DEVICES}
    for dev, seq in bad:
        acks[dev] = min(acks[dev], seq - 1)
    return {dev: seq for dev, seq in acks.items() if seq > 0}


def _chain_count(rig: _Rig) -> int:
    out = io.StringIO()
    summary = provenance.export_chain_summary(rig.path, out)
    assert provenance.verify_export_summary(out.getvalue().splitlines()) == summary
    return summary.count


@pytest.mark.parametrize("positions", [(500, 1000, 1500), WORST_EIGHT], ids=["three", "eight-worst-placed"])
async def test_a_batch_of_2000_isolates_every_report_failing_alone_up_to_eight(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch, positions: tuple[int, ...]) -> None:
    """Fails before: three bad reports left 250 good ones failing unsplit, eight about 1300."""
    bad = {ORDER[i] for i in positions}
    _poison(monkeypatch, bad)
    await rig.send_batch()
    assert rig.stored() == set(ORDER) - bad  # every good report stored ...
    assert rig.acked == _expected_acks(bad)  # ... and acknowledged, but never past a failing one
    assert rig.metrics.value("civicedge_store_report_failures_total") == len(bad)  # only the bad ones failed
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 0
    assert rig.metrics.value("civicedge_reports_stored_total") == BATCH - len(bad)
    assert rig.commits <= 2 * split_budget(BATCH) + 1, rig.commits
    problem = rig.ingest.reports_problem
    assert problem is not None and problem.startswith("%d report(s) fail alone" % len(bad)), problem
    assert rig.ingest.store_problem is None
    assert _chain_count(rig) == BATCH - len(bad)
    if positions == WORST_EIGHT:  # the budget is the whole cost: every split it allows was needed
        assert rig.commits == 2 * split_budget(BATCH) + 1 == 143


async def test_past_eight_the_split_stops_and_the_rest_fails_in_its_parts(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Nine bad reports: the first eight in record order are isolated, the ninth fails with the part it is
    in; nothing is acknowledged past a failed report and the others are stored.

    Only the eight isolated ones fail alone. The ninth's part, left unsplit, is a failing commit (counted in
    the commit failures, whose alert pages, and commits_failing until a commit stores everything again), as
    any commit failing with a bug before the split existed. Was (review L4): its good reports were recorded as
    failing alone too, counted as report failures (no page) and kept in the map of reports failing alone,
    bounded at 64, where they pushed out the real ones."""
    bad = {ORDER[i] for i in (*WORST_EIGHT, 1990)}
    _poison(monkeypatch, bad)
    await rig.send_batch()
    stored = rig.stored()
    failed = set(ORDER) - stored
    assert bad <= failed and stored | failed == set(ORDER)
    assert 1 < len(failed - bad) < 250  # the ninth's part, not split further (it is no longer "an odd report")
    assert rig.commits <= 2 * split_budget(BATCH) + 1, rig.commits
    isolated = {ORDER[i] for i in WORST_EIGHT}
    assert set(rig.ingest._poisoned) == isolated  # noqa: SLF001 - only those that failed alone
    assert rig.metrics.value("civicedge_store_report_failures_total") == len(isolated)
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 1  # the ninth's part
    problem = rig.ingest.reports_problem
    assert problem is not None and problem.startswith("8 report(s) fail alone"), problem
    problem = rig.ingest.store_problem
    assert problem is not None and problem.startswith(
        "report store commits failing (1 in a row; the latest stored %d of its %d reports, then a part of it "
        "failed unsplit: the others are not acknowledged): storing %d of 2000 reports failed: unexpected KeyError"
        % (len(stored), BATCH - len(isolated), len(failed) - len(isolated))), problem
    assert "(a part of it not split further: 8 report(s) failing alone were isolated already)" in caplog.text
    assert rig.acked == _expected_acks(failed)
    assert _chain_count(rig) == len(stored)


async def test_splitting_one_batch_stops_after_split_time_s_on_slow_storage(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit attempt takes 0.25 s (a slow SD card; a clock the writer reads, moved by each attempt).
    Was (review L3): three bad reports in 2000 were isolated at any cost, 43 attempts (about 11 s here) while
    the devices re-send after 5 s. Now splitting stops SPLIT_TIME_S after the first failure once a first bad
    report is isolated (that one at any cost up to the halving's depth, see the single-report test below): the
    parts left are tried once each, and one holding another bad report fails whole, a failing commit."""
    bad = {ORDER[i] for i in (500, 1000, 1500)}
    _poison(monkeypatch, bad)
    now = [0.0]
    first_failed: list[float] = []
    real = rig.store.insert_batch

    def slow(records: list[ReportRecord], floors: dict[str, int] | None = None) -> Any:
        now[0] += 0.25
        try:
            return real(records, floors)
        except KeyError:
            first_failed[:] = first_failed or [now[0]]
            raise

    rig.store.insert_batch = slow  # type: ignore[method-assign]
    rig.ingest._split_clock = lambda: now[0]  # noqa: SLF001
    await rig.send_batch()
    spent = now[0] - first_failed[0]
    # The first isolation (two attempts per level of the halving: 5.0 s here, at ORDER[500]), or SPLIT_TIME_S of
    # splitting, the attempt running then and each part left once (at most one per level): about 11 s before.
    depth = BATCH.bit_length()
    assert spent <= max(0.25 * 2 * depth, ingest_writer.SPLIT_TIME_S + 0.25 * (depth + 1)), spent
    stored = rig.stored()
    failed = set(ORDER) - stored
    assert bad <= failed and len(failed) > len(bad)  # a part holding a bad report was left whole
    assert stored and rig.acked == _expected_acks(failed)
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 1
    assert rig.metrics.value("civicedge_store_report_failures_total") == len(rig.ingest._poisoned) < len(bad)  # noqa: SLF001
    assert set(rig.ingest._poisoned) == {ORDER[500]}  # noqa: SLF001 - the first is isolated, then the time is up
    problem = rig.ingest.store_problem
    assert problem is not None and "then a part of it failed unsplit" in problem, problem
    assert _chain_count(rig) == len(stored)


async def test_one_report_failing_alone_is_isolated_and_recorded_on_slow_storage(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit attempt 0.25 s, one bad report at ORDER[1234]. Was (review M1): the split stopped 2 s after
    the first failure before reaching it, 63 reports failed whole (62 good), a failing commit (it pages), and
    nothing was recorded, so the next batch split and failed the same way. Now the first one is isolated at any
    cost up to two attempts per level of the halving (23 here, 5.75 s), recorded and set aside next time."""
    bad = ORDER[1234]
    _poison(monkeypatch, {bad})
    now = [0.0]
    real = rig.store.insert_batch

    def slow(records: list[ReportRecord], floors: dict[str, int] | None = None) -> Any:
        now[0] += 0.25
        return real(records, floors)

    rig.store.insert_batch = slow  # type: ignore[method-assign]
    rig.ingest._split_clock = lambda: now[0]  # noqa: SLF001
    await rig.send_batch()
    assert rig.stored() == set(ORDER) - {bad} and rig.acked == _expected_acks({bad})
    assert set(rig.ingest._poisoned) == {bad}  # noqa: SLF001 - recorded: set aside in the next batch
    assert rig.metrics.value("civicedge_store_report_failures_total") == 1
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 0 and rig.ingest.store_problem is None
    assert rig.commits <= 2 * BATCH.bit_length() + 1 and now[0] <= 0.25 * rig.commits, (rig.commits, now[0])


async def test_a_bug_every_report_of_2000_sets_off_stops_the_split_at_eight(
        rig: _Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    _poison(monkeypatch, set(ORDER))
    await rig.send_batch()
    assert rig.stored() == set() and rig.acked == {}
    # down to eight single reports (about 2 * (log2(2000) + 8) commits), then each part left once: not 143
    assert rig.commits <= 2 * (BATCH.bit_length() + SPLIT_ISOLATES) + BATCH.bit_length(), rig.commits
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 1  # an outage: nothing stored


class _Records:
    """A fake store for :meth:`IngestService._store_parts` alone: fails a part holding a bad index."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.splits = 0  # failed parts of more than one record

    def insert_batch(self, records: list[Any], floors: dict[str, int] | None = None) -> store_module.BatchResult:
        if self.bad.intersection(records):
            self.splits += len(records) > 1
            raise KeyError("a bug")
        return store_module.BatchResult()


@pytest.mark.parametrize("size", [2, 3, 5, 8, 13, 16, 17, 31])
async def test_the_budget_isolates_any_placement_of_that_many_and_no_more_is_spent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """split_budget, checked on the writer's own loop for every placement of up to two bad records (the
    isolate count set to 2 here, so that every placement can be tried): each one fails alone, everything
    else commits, and the worst placement needs every split of the budget."""
    monkeypatch.setattr(ingest_writer, "SPLIT_ISOLATES", 2)
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw")
    ingest = IngestService(store=store, verifier=Verifier(Registry(tmp_path / "registry"), load_policy()),
                           metrics=GatewayMetrics("gw"))
    try:
        budget = ingest_writer.split_budget(size, 2)
        most = 0
        for count in (1, 2):
            for bad in itertools.combinations(range(size), count):
                fake = _Records(set(bad))

                async def direct(fn: Any, *args: Any) -> Any:
                    return fn(*args)

                ingest.store = fake  # type: ignore[assignment]
                ingest.run_in_store = direct  # type: ignore[method-assign]
                out = await ingest._store_parts(list(range(size)), {})  # type: ignore[arg-type]  # noqa: SLF001
                assert [rec for rec, _ in out.poison] == list(bad), (size, bad)
                assert out.failed == list(bad) and out.committed == [i for i in range(size) if i not in bad]
                most = max(most, fake.splits)
        assert most == budget, (size, most, budget)
    finally:
        ingest.close()
        store.close()


def test_the_budget_for_2000_and_its_bad_input() -> None:
    assert split_budget(2000) == 1 + 2 + 4 + 8 * 8 == 71
    assert split_budget(1) == 0 and split_budget(2) == 1 and split_budget(200, 1) == 8
    with pytest.raises(ValueError, match="at least one report and isolates >= 1, not 0 and 8"):
        split_budget(0)
