"""Retention pass cost: a continuous pass against a counted one, on the same store in the same run.

A store of bin and streetlight window reports (one every 15 min per board, in the order they came) and a
day report per bin board a day, over two years. The **floor** is the first pass of a run, which counts
every stored value (the large-removal hold may apply to it, and nothing earlier vouches for the store),
here after a restart on a store whose older values an earlier pass removed; then reports for an hour more
arrive and the next pass, an hour later, runs as every later pass of a run does; each removes an hour. Printed: CPU seconds of each pass and the ratio continuous / counted. Before the find stage
(gateway/storage/field_retention.py) every pass counted: the ratio was about 1.

    .venv/bin/python bench/retention_pass.py            # 10 bin and 10 streetlight boards, 2 years: ~1.4M reports
    .venv/bin/python bench/retention_pass.py --short    # CI: 2 and 2, 400 days: ~150k reports
    .venv/bin/python bench/retention_pass.py --short --days 1000   # a store older than bin's 730-day report
                                                                   # retention (streetlight rows kept 1825)
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from gateway.resources import load_policy
from gateway.storage import ReportRecord, ReportStore

DAY = 86400
STEP = 900
DAYS = {(k, f): int(spec["retention_days"]) for k, kspec in load_policy()["kinds"].items()
        for f, spec in kspec["fields"].items()}
BIN_M = {"temp": 5, "fill": 30, "tilt": 0, "bat": 90, "lid": 1}
SL_M = {"lux": 10, "mot": 2, "lvl": 3, "lamp": 1, "wh": 7}


def fill(store: ReportStore, boards: int, start: int, end: int, seqs: dict[str, int]) -> None:
    """Reports of ``boards`` bin and streetlight boards with windows from ``start`` to ``end``."""
    batch: list[ReportRecord] = []
    for w in range(start, end, STEP):
        for b in range(boards):
            for dev, kind, m in (("bin-%d" % b, "bin", BIN_M), ("sl-%d" % b, "streetlight", SL_M)):
                seqs[dev] = seqs.get(dev, 0) + 1
                batch.append(ReportRecord(dev, seqs[dev], kind, "z", "win", w, STEP, dict(m), {}, [], "1",
                                          w + STEP + 5.0, "serial:/dev/x", "%064x" % len(batch)))
            if w % DAY == 0:
                dev = "bin-%d" % b
                seqs[dev] += 1
                batch.append(ReportRecord(dev, seqs[dev], "bin", "z", "day", w - DAY, DAY, dict(BIN_M), {}, [], "1",
                                          w + 5.0, "serial:/dev/x", "%064x" % len(batch)))
        if len(batch) >= 5000:
            store.insert_batch(batch, dict(seqs))
            batch = []
    if batch:
        store.insert_batch(batch, dict(seqs))


def cpu_pass(store: ReportStore, now: float) -> float:
    started = time.process_time()
    rows = store.begin_retention(DAYS, now)
    while store.retention_batch(rows):
        pass
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="small run for CI (seconds)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--days", type=int, default=None,
                        help="days of reports stored (default 730, --short 400); past 730 the row part of each pass "
                             "has streetlight rows (kept 1825 days) older than bin's report retention to pass over")
    args = parser.parse_args()
    if args.days is not None and not 1 <= args.days <= 3650:
        parser.error("--days must be 1 to 3650, not %d" % args.days)
    logging.disable(logging.WARNING)  # the first pass's large-removal WARNING is expected here
    boards, days = (2, 400) if args.short else (10, 730)
    days = days if args.days is None else args.days
    now = 1_800_000_000 - 1_800_000_000 % DAY
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "r.sqlite"
        store = ReportStore(db, gateway_id="gw", backup_before_migration=False)
        seqs: dict[str, int] = {}
        fill(store, boards, now - days * DAY, now, seqs)
        cpu_pass(store, float(now))  # what is past retention goes: both timed passes remove an hour's values
        store.close()
        store = ReportStore(db, gateway_id="gw", backup_before_migration=False)  # a restart: the next pass counts
        fill(store, boards, now, now + 3600, seqs)
        counted = cpu_pass(store, float(now + 3600))
        fill(store, boards, now + 3600, now + 7200, seqs)
        continuous = cpu_pass(store, float(now + 7200))
        reports = int(store._conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0])
        store.close()
    figures = {"reports": reports, "counted_s": round(counted, 3), "continuous_s": round(continuous, 4),
               "ratio": round(continuous / counted, 4)}
    if args.json:
        print(json.dumps(figures))
    else:
        print("%d reports: counted pass %.3f s CPU (floor), continuous pass an hour later %.4f s CPU: ratio %.4f"
              % (reports, counted, continuous, continuous / counted))


if __name__ == "__main__":
    main()
