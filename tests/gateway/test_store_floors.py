"""ACK floors persisted with a batch: multi-row upserts that never lower a floor."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.storage.store import ReportRecord, ReportStore


def test_floors_of_many_devices_are_saved_and_never_lowered(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "reports.sqlite", gateway_id="gw")
    try:
        # 300 devices: several statement sizes (256 + 16 + 16 + 4 + 4 + 4), as a busy batch carries
        first = {"dev-%03d" % i: 10 + i for i in range(300)}
        store.insert_batch([], first)
        assert store.ack_floors() == first
        # a lower floor (a late save of an older ACK) keeps the higher one; a higher one wins; new devices added
        second = {"dev-%03d" % i: (5 if i % 2 else 20 + i) for i in range(0, 300, 3)}
        second["dev-new"] = 7
        store.insert_batch([], second)
        want = dict(first)
        for dev, floor in second.items():
            want[dev] = max(want.get(dev, 0), floor)
        assert store.ack_floors() == want
        assert want["dev-003"] == 13 and want["dev-000"] == 20   # kept / raised
    finally:
        store.close()


def test_a_batch_of_only_retired_seqs_on_a_store_retention_emptied(tmp_path: Path) -> None:
    """Row retention removed every report (retired seqs kept); a board re-sends an old seq: the whole
    batch drops out as duplicates. MAX(id) of the empty table was None: a TypeError out of the store
    thread instead of a committed batch with its ACK floor."""
    db = tmp_path / "reports.sqlite"
    ReportStore(db, gateway_id="gw").close()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO retired_seqs (device, seq) VALUES ('bin-1', 40)")
    conn.close()
    store = ReportStore(db, gateway_id="gw")
    try:
        old = ReportRecord("bin-1", 12, "bin", "centre", "win", 1795377600, 900, {"fill": 50}, {}, [], "0.2.0",
                           1795378600.0, "serial:/dev/ttyUSB0", "ab" * 32)
        result = store.insert_batch([old], {"bin-1": 41})
        assert result.duplicates == [("bin-1", 12)] and result.inserted == []
        assert store.ack_floors() == {"bin-1": 41}
    finally:
        store.close()
