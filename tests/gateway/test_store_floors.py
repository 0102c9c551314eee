"""ACK floors persisted with a batch: multi-row upserts that never lower a floor."""

from __future__ import annotations

from pathlib import Path

from gateway.storage.store import ReportStore


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
