"""ReportQueries.snapshot(): several reads of the read API in one read transaction, so a writer's commit
between them (an ingest batch, a retention pass) is seen by none of them, on a store written by the real
ReportStore."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest

from gateway.errors import StorageError
from gateway.storage import ReportQueries, ReportRecord, ReportStore

DAY = 86400
T0 = 1_795_000_000 - 1_795_000_000 % DAY  # a UTC midnight
WIN = 900


def rec(device: str, seq: int, w: int, m: dict[str, int], *, type_: str = "win",
        a: tuple[str, ...] = ()) -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind="bin", zone="north", type=type_, w=w, l=WIN, m=m, e={},
                        a=list(a), fw="1.0", received_at=float(w + WIN), link="serial:test",
                        digest="%064x" % (hash((device, seq)) & 2**64 - 1))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[ReportStore, ReportQueries]]:
    path = tmp_path / "r.sqlite"
    store = ReportStore(path, gateway_id="gw-snap")
    store.insert_batch([rec("bin-1", i + 1, T0 + i * WIN, {"fill": 10 * i, "tilt": 0}) for i in range(4)])
    queries = ReportQueries(path)
    try:
        yield store, queries
    finally:
        queries.close()
        store.close()


def _fills(q: ReportQueries) -> list[int]:
    return sorted(int(v) for _, _, _, v in q.field_values("bin", "fill", T0, T0 + DAY))


def test_reads_in_a_snapshot_miss_an_ingest_and_a_retention_pass_committed_between_them(
        db: tuple[ReportStore, ReportQueries]) -> None:
    store, q = db
    with q.snapshot():
        before = q.count_reports()
        fills = _fills(q)
        store.insert_batch([rec("bin-1", 5, T0 + 4 * WIN, {"fill": 90, "tilt": 1}),
                            rec("bin-1", 6, T0 + 4 * WIN, {}, type_="alarm", a=("fire",))])
        assert store.apply_retention({("bin", "fill"): 1}, now=T0 + 3 * DAY) > 0  # every fill removed
        # the same state as the first read: not the new reports, not the removal
        assert q.count_reports() == before == 4
        assert _fills(q) == fills == [0, 10, 20, 30]
        assert q.alarms(start=T0, end=T0 + DAY) == []
        tilts = q.latest_field_values("bin", "tilt", ["bin-1"], T0, T0 + DAY)
        assert [(d, v) for d, _, v, _ in tilts] == [("bin-1", 0)]
        assert q.data_version() == 0
    # after the block: the store as it is now
    assert q.count_reports() == 6
    assert _fills(q) == []
    assert [a.code for a in q.alarms(start=T0, end=T0 + DAY)] == ["fire"]
    assert q.data_version() == 1


def test_methods_with_a_transaction_of_their_own_read_the_snapshot(db: tuple[ReportStore, ReportQueries]) -> None:
    """changes_since, range_stamp, devices_reported (BEGIN ... COMMIT of their own) join the snapshot: no
    'cannot start a transaction within a transaction', and the snapshot is still held after them."""
    store, q = db
    with q.snapshot():
        stamp = q.range_stamp(start=T0, end=T0 + DAY)
        store.insert_batch([rec("bin-2", 1, T0, {"fill": 50})])
        assert q.range_stamp(start=T0, end=T0 + DAY) == stamp and stamp.newest_id == 4
        assert q.devices_reported(["bin-1", "bin-2"], max_id=100) == {"bin-1"}
        changes = q.changes_since(0)
        assert changes.watermark == 4 and set(changes.last) == {"bin-1"}
        rows = q.csv_rows_stamp(since=T0, until=T0 + DAY, devices=["bin-1", "bin-2"], max_period_s=DAY)
        assert (rows.newest_id, rows.count) == (4, 4)
        assert q.count_reports() == 4  # still the snapshot after the methods' own transactions
    assert q.range_stamp(start=T0, end=T0 + DAY).newest_id == 5
    assert q.devices_reported(["bin-1", "bin-2"], max_id=100) == {"bin-1", "bin-2"}


def test_nested_snapshots_share_the_outermost(db: tuple[ReportStore, ReportQueries]) -> None:
    store, q = db
    with q.snapshot():
        with q.snapshot():
            assert q.count_reports() == 4
            store.insert_batch([rec("bin-2", 1, T0, {"fill": 50})])
        assert q.count_reports() == 4  # the inner block's end left the outer snapshot open
    assert q.count_reports() == 5


def test_a_snapshot_is_this_threads_only(db: tuple[ReportStore, ReportQueries]) -> None:
    store, q = db
    seen: list[int] = []
    with q.snapshot():
        assert q.count_reports() == 4
        store.insert_batch([rec("bin-2", 1, T0, {"fill": 50})])
        other = threading.Thread(target=lambda: seen.append(q.count_reports()))
        other.start()
        other.join()
        assert q.count_reports() == 4
    assert seen == [5]


def test_a_failed_read_ends_the_snapshot_and_the_later_reads_of_the_block_fail(
        db: tuple[ReportStore, ReportQueries]) -> None:
    """Never a silent read of a newer store inside a block that promised one state."""
    store, q = db
    with q.snapshot():
        assert q.count_reports() == 4
        store.insert_batch([rec("bin-2", 1, T0, {"fill": 50})])
        with pytest.raises(StorageError) as failed:
            q._rows("SELECT no_such_column FROM reports", ())  # noqa: SLF001 - a read that fails
        assert failed.value.reason == "read_failed"
        with pytest.raises(StorageError) as ended:
            q.count_reports()
        assert ended.value.reason == "read_failed" and "snapshot ended" in str(ended.value)
    assert q.count_reports() == 5  # outside a block: reads again, the store as it is


def test_a_snapshot_left_by_an_exception_is_ended(db: tuple[ReportStore, ReportQueries]) -> None:
    store, q = db
    with pytest.raises(RuntimeError):
        with q.snapshot():
            assert q.count_reports() == 4
            raise RuntimeError("caller's own error")
    store.insert_batch([rec("bin-2", 1, T0, {"fill": 50})])
    assert q.count_reports() == 5


def test_close_inside_a_snapshot_ends_it_and_later_reads_fail(db: tuple[ReportStore, ReportQueries]) -> None:
    _, q = db
    with q.snapshot():
        assert q.count_reports() == 4
        q.close()
        with pytest.raises(StorageError) as closed:
            q.count_reports()
        assert closed.value.reason == "read_failed"
