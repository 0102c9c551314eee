"""The row part of a later retention pass of an open store reads only what expired since the last one, per kind
(gateway/storage/row_retention.py, "What is read"): a store older than bin's report retention (730 days) no longer
reads, every pass, the streetlight rows (kept 1825 days) between the two cut-offs; and it removes exactly what a
first pass over the same store removes. Real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.resources import load_policy
from gateway.storage import ReportRecord, ReportStore, row_retention

DAY = 86400
NOW = 1_800_000_000 - 1_800_000_000 % DAY
DAYS = {(k, f): int(spec["retention_days"]) for k, kspec in load_policy()["kinds"].items()
        for f, spec in kspec["fields"].items()}
BIN_M = {"temp": 5, "fill": 30, "tilt": 0, "bat": 90, "lid": 1}
SL_M = {"lux": 10, "mot": 2, "lvl": 3, "lamp": 1, "wh": 7}


def rec(device: str, seq: int, w: int, *, l: int = 900, received: float | None = None) -> ReportRecord:
    kind, m = ("bin", BIN_M) if device.startswith("bin") else ("streetlight", SL_M)
    return ReportRecord(device, seq, kind, "z", "day" if l == DAY else "win", w, l, dict(m), {}, [], "1",
                        w + l + 5.0 if received is None else received, "serial:/dev/x",
                        "%064x" % (seq + 100000 * len(device) + 7 * sum(map(ord, device))))


def ids(db: Path) -> set[tuple[str, int]]:
    conn = sqlite3.connect(db)
    try:
        return {(str(d), int(s)) for d, s in conn.execute("SELECT device, seq FROM reports")}
    finally:
        conn.close()


def history(start: int, end: int, step: int, seqs: dict[str, int], devices: tuple[str, ...]) -> list[ReportRecord]:
    out = []
    for w in range(start, end, step):
        for dev in devices:
            seqs[dev] = seqs.get(dev, 0) + 1
            out.append(rec(dev, seqs[dev], w))
    return out


def test_a_later_pass_removes_exactly_what_a_first_pass_removes_across_two_kinds(tmp_path: Path) -> None:
    """Bin (report retention 730 days) and streetlight (1825) over 900 days, with rows the first pass cannot
    remove yet that the later one must (a period across the cut-off, a late reception, a seq above the ACK
    floor whose gap is then filled) and old rows stored between the passes (a late batch); the later pass runs
    by what the first left (its marks), and a store opened afresh on a copy (whose first pass reads every row)
    removes the same rows."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw", backup_before_migration=False)
    seqs: dict[str, int] = {}
    batch = history(NOW - 900 * DAY, NOW, 6 * 3600, seqs, ("bin-1", "sl-1"))
    cut1 = NOW - 730 * DAY
    batch += [rec("bin-span", 1, cut1 - 3600, l=DAY),  # its period ends after the first cut-off
              rec("bin-late", 1, cut1 - 10 * DAY, received=cut1 + DAY),  # received after the first cut-off
              rec("bin-gap", 1, cut1 - 20 * DAY), rec("bin-gap", 2, cut1 - 20 * DAY + 900),
              rec("bin-gap", 4, cut1 - 20 * DAY + 2700)]  # seq 3 missing: 4 above the floor
    floors = dict(seqs, **{"bin-span": 1, "bin-late": 1, "bin-gap": 2})
    store.insert_batch(batch, floors)
    store.apply_retention(DAYS, float(NOW))
    after_first = ids(db)
    assert ("bin-1", 1) not in after_first and ("sl-1", 1) in after_first
    assert {("bin-span", 1), ("bin-late", 1), ("bin-gap", 4)} <= after_first
    assert ("bin-gap", 1) not in after_first and ("bin-gap", 2) not in after_first
    assert set(store._cleared.rows) == {"bin", "streetlight"}  # the next pass goes by what this one left

    later = NOW + 3 * DAY
    more = [rec("bin-gap", 3, cut1 - 20 * DAY + 1800, received=cut1 + 2 * DAY),  # the gap filled: 3 and 4 go
            rec("bin-old", 1, cut1 - 30 * DAY, received=float(NOW + DAY)),  # a late batch, received late
            rec("bin-old", 2, cut1 - 100 * DAY, received=cut1 - 99 * DAY)]  # (a reception time set back)
    more += history(NOW, later, 6 * 3600, seqs, ("bin-1", "sl-1"))  # (the newest row, which stays, is one of these)
    store.insert_batch(more, dict(seqs, **{"bin-old": 2}))
    fresh = tmp_path / "fresh.sqlite"
    src, dst = sqlite3.connect(db), sqlite3.connect(fresh)
    src.backup(dst)  # (a reader: the open store's data version does not move)
    src.close()
    dst.close()

    store.apply_retention(DAYS, float(later))  # goes by what the first pass left
    assert store._cleared.rows["bin"].cutoff == later - 730 * DAY
    store.close()
    got = ids(db)
    other = ReportStore(fresh, gateway_id="gw", backup_before_migration=False)
    other.apply_retention(DAYS, float(later))  # reads every row
    other.close()
    assert got == ids(fresh)
    cut2 = later - 730 * DAY
    assert not {r for r in got if r[0].startswith("bin-") and r[0] != "bin-1"} - {("bin-old", 1)}
    assert ("bin-old", 1) in got  # received after the second cut-off: stays
    bins = [s for d, s in got if d == "bin-1"]
    sls = [s for d, s in got if d == "sl-1"]
    first = NOW - 900 * DAY
    assert min(bins) == (cut2 - 900 - first) // (6 * 3600) + 2  # exactly the bin rows past 730 days are gone
    assert min(sls) == 1 and len(sls) == seqs["sl-1"]  # no streetlight row (kept 1825 days) is


def row_part_steps(db: Path, streetlight_days: int) -> int:
    """SQLite VM steps (progress handler calls, one per 100) of the row part of a later pass over a store of bin
    and streetlight rows every 4 hours for 800 days and streetlight rows for ``streetlight_days`` before."""
    store = ReportStore(db, gateway_id="gw", backup_before_migration=False)
    seqs: dict[str, int] = {}
    start = NOW - 800 * DAY
    store.insert_batch(history(start - streetlight_days * DAY, start, 4 * 3600, seqs, ("sl-1",)), dict(seqs))
    store.insert_batch(history(start, NOW, 4 * 3600, seqs, ("bin-1", "sl-1")), dict(seqs))
    store.apply_retention(DAYS, float(NOW))
    store.insert_batch(history(NOW, NOW + 3600, 900, seqs, ("bin-1", "sl-1")), dict(seqs))
    rows = store.remove_values(DAYS, float(NOW + 3600))
    assert rows is not None
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    store._conn.set_progress_handler(step, 100)
    try:
        while store.remove_rows_batch(rows):
            pass
    finally:
        store._conn.set_progress_handler(None, 100)
    store.close()
    return steps[0]


def test_a_later_pass_does_not_read_the_rows_of_a_kind_kept_longer(tmp_path: Path) -> None:
    """Fails before: the bin rows' batches read every row whose w is before bin's cut-off, so a later pass read
    the streetlight rows between 730 and 1825 days old again each time (about 3,000 more rows here, and the
    steps grew with them); now the steps do not depend on how many there are."""
    few = row_part_steps(tmp_path / "few.sqlite", 10)
    many = row_part_steps(tmp_path / "many.sqlite", 500)
    assert many - few < 30, (few, many)  # 30 = 3,000 VM steps: a few per row of 3,000 rows is more (before: 531)


def test_a_kind_leaving_more_rows_than_it_keeps_track_of_is_read_whole_again(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """More rows past the cut-off that cannot go yet (here above their device's ACK floor) than STUCK_MAX: no mark
    is kept for the kind, and once the floor moves the next pass removes them all."""
    monkeypatch.setattr(row_retention, "STUCK_MAX", 3)
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw", backup_before_migration=False)
    seqs: dict[str, int] = {}
    store.insert_batch(history(NOW - 800 * DAY, NOW, 6 * 3600, seqs, ("bin-1", "sl-1")), dict(seqs))
    old = NOW - 760 * DAY
    store.insert_batch([rec("bin-gap", s, old + 900 * s) for s in (1, 2, 4, 5, 6, 7, 8)], {"bin-gap": 2})
    store.apply_retention(DAYS, float(NOW))
    assert "bin" not in store._cleared.rows and "streetlight" in store._cleared.rows
    assert [s for d, s in ids(db) if d == "bin-gap"] and ("bin-gap", 2) not in ids(db)
    seqs["bin-1"] += 1
    store.insert_batch([rec("bin-gap", 3, old + 2700, received=float(NOW - 740 * DAY)), rec("bin-1", seqs["bin-1"], NOW)],
                       {"bin-gap": 8, "bin-1": seqs["bin-1"]})
    store.apply_retention(DAYS, float(NOW + 3600))
    store.close()
    assert not [s for d, s in ids(db) if d == "bin-gap"]
