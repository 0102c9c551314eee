"""The batch writer's split with reports set aside (known to fail alone), checked on ``_store_parts`` itself.

A fake store fails a part holding a bad record with a KeyError (a bug, not a StorageError) and records what each
attempt got, and a fake clock moves per attempt, so each rule is seen directly: the results come back in batch
order, the ACK floors ride with the first part that commits (also when that is a set-aside report), a failing
store stops the set-aside attempts, a part left whole mixes with set-aside reports, and a first record failing
alone is isolated on slow storage while the halving past the time limit stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from gateway.errors import StorageError
from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Verifier
from gateway.pipeline import ingest_writer
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportStore
from gateway.storage.store import BatchResult


@dataclass(frozen=True)
class _Rec:
    """What _store_parts reads of a record: its device and seq (index i is seq i of one device)."""

    device: str
    seq: int


class _Store:
    """Fails a part holding a ``bad`` seq with a KeyError, or raises ``broken`` once a ``breaks`` seq is in the
    part; records each attempt (its seqs, the floors it got, whether it committed); each attempt costs ``cost``
    seconds of the fake clock ``now``."""

    def __init__(self, bad: set[int], *, breaks: int | None = None, cost: float = 0.0,
                 fail_parts_over: int | None = None) -> None:
        self.bad, self.breaks, self.cost = bad, breaks, cost
        self.fail_parts_over = fail_parts_over  # a bug every part of more records than this sets off
        self.now = 0.0
        self.attempts: list[tuple[list[int], dict[str, int] | None, bool]] = []
        self.splits = 0  # failed parts of more than one record (split, or left whole)

    def insert_batch(self, records: list[_Rec], floors: dict[str, int] | None = None) -> BatchResult:
        self.now += self.cost
        seqs = [r.seq for r in records]
        failing = bool(self.bad.intersection(seqs)) or (
            self.fail_parts_over is not None and len(seqs) > self.fail_parts_over)
        self.attempts.append((seqs, floors, not failing and self.breaks not in seqs))
        if self.breaks in seqs:
            raise StorageError("disk full", reason="write_failed")
        if failing:
            self.splits += len(seqs) > 1
            raise KeyError("a bug")
        return BatchResult(inserted=[(r.device, r.seq) for r in records])


@pytest.fixture
async def ingest(tmp_path: Path) -> AsyncIterator[IngestService]:
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw")
    service = IngestService(store=store, verifier=Verifier(Registry(tmp_path / "registry"), load_policy()),
                            metrics=GatewayMetrics("gw"))
    try:
        yield service
    finally:
        service.close()
        store.close()


async def _parts(ingest: IngestService, fake: _Store, size: int, aside: set[int],
                 floors: dict[str, int]) -> ingest_writer._Stored:
    """Run _store_parts on seqs 0..size-1 of device d with ``aside`` known to fail alone."""

    async def direct(fn: Any, *args: Any) -> Any:
        return fn(*args)

    ingest.store = fake  # type: ignore[assignment]
    ingest.run_in_store = direct  # type: ignore[method-assign]
    ingest._split_clock = lambda: fake.now  # noqa: SLF001
    ingest._poisoned = {("d", i): ingest_writer._Poisoned(first=0.0, last=0.0) for i in aside}  # noqa: SLF001
    records = [_Rec("d", i) for i in range(size)]
    return await ingest._store_parts(records, floors)  # type: ignore[arg-type]  # noqa: SLF001


async def test_results_with_set_aside_reports_come_back_in_batch_order(ingest: IngestService) -> None:
    """2 set aside and fixed meanwhile (commits alone), 5 set aside and still failing, 7 failing in the others:
    committed and failed in batch order (the writer ACKs and settles in it). Fails with the sort removed."""
    fake = _Store({5, 7})
    out = await _parts(ingest, fake, 10, {2, 5}, {})
    assert out.committed == [0, 1, 2, 3, 4, 6, 8, 9]
    assert out.failed == [5, 7]
    assert sorted(out.alone) == [5, 7] and out.error is None and out.unsplit == ""
    assert [seqs for seqs, _, _ in fake.attempts][-2:] == [[2], [5]]  # the set-aside ones last, alone
    assert out.result.inserted == [("d", i) for i in (0, 1, 3, 4, 6, 8, 9, 2)]  # merged as committed


async def test_floors_ride_with_a_set_aside_report_when_it_is_the_first_to_commit(ingest: IngestService) -> None:
    """A batch made only of set-aside reports: the floors go with the first one that commits, and only then
    are they saved. Fails when the set-aside attempts get None (floors marked saved, never written)."""
    floors = {"d": 4}
    fake = _Store({0})
    out = await _parts(ingest, fake, 2, {0, 1}, floors)
    assert [(seqs, got, ok) for seqs, got, ok in fake.attempts] == [([0], floors, False), ([1], floors, True)]
    assert out.committed == [1] and out.failed == [0] and out.floors_saved

    fake = _Store({0, 1})  # neither commits: the floors are not saved (the writer keeps them for the next commit)
    out = await _parts(ingest, fake, 2, {0, 1}, floors)
    assert all(got == floors for _, got, _ in fake.attempts) and not out.floors_saved
    assert out.committed == [] and out.failed == [0, 1]


async def test_a_failing_store_while_set_aside_reports_are_tried_fails_the_rest_untried(
        ingest: IngestService) -> None:
    """1 still fails alone, then the store fails (a StorageError) on 3: 5 is not tried, and the batch's error is
    the store's (a failing commit, not reports failing alone)."""
    fake = _Store({1}, breaks=3)
    out = await _parts(ingest, fake, 7, {1, 3, 5}, {"d": 2})
    assert [seqs for seqs, _, _ in fake.attempts] == [[0, 2, 4, 6], [1], [3]]
    assert isinstance(out.error, StorageError) and str(out.error).startswith("disk full")
    assert out.committed == [0, 2, 4, 6] and out.failed == [1, 3, 5] and out.alone == [1]
    assert out.floors_saved  # with the first part
    assert ingest._failing_alone(out) == []  # noqa: SLF001 - the store failed: not "failing alone"


async def test_set_aside_reports_with_a_part_left_whole(ingest: IngestService,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """One isolation allowed: 3 is isolated, the part holding 6 is left whole, 0 (set aside) fails alone: the failing-alone
    ones are 0 and 3 only, the part left whole (4 to 7) is not, and every list is in batch order."""
    monkeypatch.setattr(ingest_writer, "SPLIT_ISOLATES", 1)
    fake = _Store({0, 3, 6})
    out = await _parts(ingest, fake, 8, {0}, {})
    assert out.committed == [1, 2] and out.failed == [0, 3, 4, 5, 6, 7]  # [4, 8) left whole
    assert out.alone == [3, 0] and [(r.seq, type(e)) for r, e in out.poison] == [(3, KeyError), (0, KeyError)]
    assert out.unsplit == "1 report(s) failing alone were isolated already"
    assert ingest._failing_alone(out) == [3, 0]  # noqa: SLF001 - the writer fails 4 to 7 as a failing commit


@pytest.mark.parametrize("bad", [0, 1234, 1999])
async def test_on_slow_storage_one_report_failing_alone_is_isolated_past_the_time_limit(
        ingest: IngestService, bad: int) -> None:
    """Each attempt 1 s (SPLIT_TIME_S is up after the second): the one bad record is still isolated, in at most
    two attempts per level of the halving, and the rest commits. Was (review M1): the split stopped at 2 s, a
    part of 125 to 1000 records holding it failed whole and nothing was isolated, so nothing was set aside in
    the next batch either."""
    fake = _Store({bad}, cost=1.0)
    out = await _parts(ingest, fake, 2000, set(), {})
    assert out.failed == out.alone == [bad] and out.unsplit == ""
    assert out.committed == [i for i in range(2000) if i != bad]
    assert len(fake.attempts) <= 2 * (2000).bit_length() + 1, len(fake.attempts)


async def test_past_the_time_limit_a_split_that_isolates_nothing_stops_at_the_halvings_depth(
        ingest: IngestService) -> None:
    """A bug every part of more than one record sets off, never one alone (isolated: nothing), on slow storage:
    past SPLIT_TIME_S at most the halving's depth of splits (11 for 2000), not the budget of 71."""
    fake = _Store(set(), cost=1.0, fail_parts_over=1)
    out = await _parts(ingest, fake, 2000, set(), {})
    assert len(fake.attempts) == 1 + 2 * (2000).bit_length() == 23  # each split: two attempts
    assert fake.splits == 20  # failed parts of more than one record: 11 split, 9 left whole (tried once)
    assert out.alone == [] and out.unsplit.startswith("splitting took ") and out.committed
    assert len(out.committed) + len(out.failed) == 2000 and out.failed == sorted(out.failed)
