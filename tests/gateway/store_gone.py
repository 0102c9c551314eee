"""Set-up shared by the ``store_gone`` tests (test_store_gone_advice.py, test_store_gone_descriptor.py): a real
store with a few reports committed, whose file the test then moves, deletes or hides."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.storage import ReportRecord, ReportStore

T0 = 1_700_000_100 - (1_700_000_100 % 3600)


def rec(seq: int) -> ReportRecord:
    """Report ``seq`` of bin ``b1`` (a 15-minute window ``seq`` after :data:`T0`)."""
    return ReportRecord(device="b1", seq=seq, kind="bin", zone="north", type="win", w=T0 + 900 * seq, l=900,
                        m={"fill": 40}, e={}, a=[], fw="1.0", received_at=T0 + 900 * seq + 5.0,
                        link="serial:/dev/x", digest="%064x" % seq)


def seqs(db: Path) -> list[int]:
    """The seqs of the reports in the store file ``db``, in order (read with plain sqlite3)."""
    conn = sqlite3.connect(db)
    try:
        return [s for (s,) in conn.execute("SELECT seq FROM reports ORDER BY seq")]
    finally:
        conn.close()


@contextmanager
def filled_store(path: Path, reports: int = 1) -> Iterator[ReportStore]:
    """The store at ``path`` (gateway ``gw1``) with :func:`rec` 1 .. ``reports`` committed, one batch each;
    closed when the block ends, however it ends."""
    store = ReportStore(path, gateway_id="gw1")
    try:
        for seq in range(1, reports + 1):
            store.insert_batch([rec(seq)])
        yield store
    finally:
        store.close()
