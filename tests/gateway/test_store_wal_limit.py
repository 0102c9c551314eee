"""The store's -wal is cut back after a large transaction, not kept at its peak until a clean stop.

A large retention removal grew the -wal to ~52 MB on a long-running gateway (no journal_size_limit): space
a small box's SD card held for as long as the gateway ran.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from gateway.storage import ReportRecord, ReportStore
from gateway.storage.store import WAL_SIZE_LIMIT_BYTES


def _records(device: str, n: int) -> list[ReportRecord]:
    return [ReportRecord(device=device, seq=seq, kind="streetlight", zone="north", type="win",
                         w=1_700_000_000 + seq * 900, l=900, m={"lux": seq % 100, "temp": 12}, e={}, a=[], fw="t",
                         received_at=1_700_000_900.0 + seq * 900, link="serial:test",
                         digest=hashlib.sha256(f"{device}/{seq}".encode()).hexdigest())
               for seq in range(1, n + 1)]


def test_the_wal_shrinks_to_the_limit_after_a_large_transaction(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "reports.sqlite", gateway_id="gw-wal")
    wal = tmp_path / "reports.sqlite-wal"
    try:
        # one commit far larger than the limit (~27 MB of pages); SQLite checkpoints it at its end
        assert len(store.insert_batch(_records("lamp-big", 60_000)).inserted) == 60_000
        assert wal.stat().st_size > WAL_SIZE_LIMIT_BYTES
        # the next commit starts the log over and cuts the file back
        assert len(store.insert_batch(_records("lamp-small", 1)).inserted) == 1
        assert 0 < wal.stat().st_size <= WAL_SIZE_LIMIT_BYTES
    finally:
        store.close()
    assert not wal.exists() or wal.stat().st_size == 0  # a clean stop still empties it
    reopened = ReportStore(tmp_path / "reports.sqlite", gateway_id="gw-wal")
    try:
        assert reopened.insert_batch(_records("lamp-small", 2)).inserted == [("lamp-small", 2)]  # seq 1 was kept
    finally:
        reopened.close()
