"""Property test of the ingest guarantees under arbitrary arrival orders, duplicates, forgeries, restarts.

Invariants: every authentic report is stored exactly once; an ACK for seq a is sent only when every
seq 1..a is already committed (no time passes, so no gap is ever given up on).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
from pathlib import Path

from conftest import KEYS
from helpers import report_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.protocol import parse_frame, verify_tag
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportStore

EXAMPLES = 200 if os.environ.get("CIVICEDGE_FULL") == "1" else 25

# (seq, authentic) arrivals; None = the gateway restarts here
events = st.lists(st.one_of(st.tuples(st.integers(1, 24), st.booleans()), st.none()), min_size=1, max_size=60)


def stored_seqs(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT seq FROM reports WHERE device='bin-1' ORDER BY seq")]
    finally:
        conn.close()


async def run(tmp: Path, evs: list[tuple[int, bool] | None]) -> tuple[list[int], list[str]]:
    reg = Registry(tmp / "reg")
    if reg.lookup("bin-1") is None:
        reg.add("bin-1", kind="bin", zone="z", lat="1", lon="2", key=KEYS["bin-1"])
    db = tmp / "r.sqlite"
    violations: list[str] = []
    acks: list[int] = []

    async def send(frame: bytes) -> None:
        parsed = parse_frame(frame)
        assert verify_tag(parsed, KEYS["bin-1"])
        have = set(stored_seqs(db))
        missing = set(range(1, parsed.seq + 1)) - have
        if missing:
            violations.append("ACK %d before %s were committed" % (parsed.seq, sorted(missing)))
        acks.append(parsed.seq)

    link = Link(name="serial:prop", kind="serial", send=send)

    def make() -> IngestService:
        return IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(reg, load_policy()),
                             metrics=GatewayMetrics("gw"), batch_ms=5, batch_max=7, gap_hold_s=1e9,
                             monotonic=lambda: 0.0)

    ingest = make()
    await ingest.start()
    for ev in evs:
        if ev is None:
            await ingest.stop()
            ingest.close()
            ingest.store.close()
            ingest = make()
            await ingest.start()
            continue
        seq, authentic = ev
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"] if authentic else KEYS["bin-2"]), link)
        if seq % 3 == 0:
            await asyncio.sleep(0)
    await ingest.stop()
    ingest.close()
    ingest.store.close()
    reg.close()
    return stored_seqs(db), violations


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_exactly_once_and_ack_after_commit(evs: list[tuple[int, bool] | None]) -> None:
    # tmpfs where available: the store fsyncs every batch (synchronous=FULL)
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        seqs, violations = asyncio.run(run(Path(d), evs))
    authentic = {e[0] for e in evs if e is not None and e[1]}
    assert seqs == sorted(authentic)  # each authentic report once, forgeries never
    assert violations == []
