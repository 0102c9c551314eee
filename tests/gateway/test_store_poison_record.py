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
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
from conftest import KEYS
from helpers import report_frame

from gateway.errors import StorageError
from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.protocol import parse_frame
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportRecord, ReportStore, provenance
from gateway.storage import store as store_module

POISON = ("bin-2", 3)


class _Rig:
    """A real IngestService on a real store file, a link that records the ACKs, a settable monotonic clock."""

    def __init__(self, registry: Registry, path: Path) -> None:
        self.now = 1000.0
        self.path = path
        self.store = ReportStore(path, gateway_id="gw")
        self.metrics = GatewayMetrics("gw")
        self.ingest = IngestService(store=self.store, verifier=Verifier(registry, load_policy()), metrics=self.metrics,
                                    batch_ms=10, gap_hold_s=15.0, monotonic=lambda: self.now,
                                    log_monotonic=lambda: 0.0)  # rate-limited lines: one per test (a burst)
        self.acked: dict[str, int] = {}
        self.link = Link(name="serial:test", kind="serial", send=self._ack)
        self.commits = 0
        real = self.store.insert_batch

        def counted(records: list[ReportRecord], floors: dict[str, int] | None = None) -> Any:
            self.commits += 1
            return real(records, floors)

        self.store.insert_batch = counted  # type: ignore[method-assign]

    async def _ack(self, frame: bytes) -> None:
        parsed = parse_frame(frame)
        self.acked[parsed.device_id] = max(self.acked.get(parsed.device_id, 0), parsed.seq)

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

    def stored(self) -> set[tuple[str, int]]:
        rows = self.store._conn.execute("SELECT device, seq FROM reports").fetchall()  # noqa: SLF001
        return {(str(d), int(s)) for d, s in rows}


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
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 1
    assert rig.metrics.value("civicedge_reports_stored_total") == n - 1
    problem = rig.ingest.store_problem
    assert problem is not None and "KeyError" in problem, problem
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
    assert rig.metrics.value("civicedge_store_commit_failures_total") == 4
    assert len([r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]) == 1

    # A later batch without the poison record is stored and acknowledged (bin-2 still held below 3).
    commits = rig.commits
    await rig.send(("bin-1", 4), ("bin-2", 5), ("sl-1", 2))
    assert rig.commits == commits + 1
    assert rig.acked == {"bin-1": 4, "bin-2": 2, "sl-1": 2}
    assert rig.ingest.store_problem is None
    assert "report store commits succeed again, after 4 failed commit(s)" in caplog.text

    # The bug fixed (an upgrade): the device's re-send of 3 is stored, and the ACK moves past everything.
    monkeypatch.undo()
    await rig.send(("bin-2", 3), ("bin-2", 4), ("bin-2", 5))
    assert POISON in rig.stored() and rig.acked["bin-2"] == 5
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
