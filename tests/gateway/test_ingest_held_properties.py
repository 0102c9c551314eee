"""Property test: with the firmware's ``h`` (protocol §2) no ACK ever covers a frame the device
still holds and the gateway has not committed — whatever the link drops or keeps back, however much
time passes, across reboots (seq blocks skipped), a full outbox and gateway restarts. And once the
link delivers again and the device goes on reporting, the outbox drains: the waiting never stalls
for good (also where the device states its held seqs with merged runs: a small run limit here).

The device side is a model of the firmware's outbox and seq counter (civic.store), framing with the
gateway's own ``build_frame``; the firmware's values are checked in tests/firmware/test_wire_report.py
and end to end in tests/reliability/test_virtual_board_faults.py.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from conftest import KEYS
from helpers import body_for
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.protocol import FRAME_REPORT, build_frame, parse_frame, verify_tag
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportStore

EXAMPLES = 200 if os.environ.get("CIVICEDGE_FULL") == "1" else 30
GAP_HOLD_S = 15.0
DEV = "bin-1"

actions = st.lists(st.one_of(
    st.tuples(st.just("report"), st.booleans()),           # frame a report (alarm or not)
    st.tuples(st.just("send"), st.integers(0, 7)),         # send one pending frame
    st.tuples(st.just("resend"), st.just(0)),              # re-send every pending frame in order
    st.tuples(st.just("suppress"), st.integers(0, 7)),     # the link keeps one pending seq back for good
    st.tuples(st.just("time"), st.integers(1, 120)),       # seconds pass
    st.tuples(st.just("reboot"), st.just(0)),              # the rest of the seq block is skipped
    st.tuples(st.just("restart"), st.just(0)),             # the gateway restarts
), min_size=1, max_size=50)


RUN_LIMIT = 3  # the firmware states at most 8 runs; 3 makes the merge happen in short examples


@dataclass
class Device:
    """The firmware's outbox (cap, oldest non-alarm dropped first, the lowest runs stated exactly and
    the rest merged) and seq counter (blocks of 4)."""

    cap: int = 6
    last: int = 0
    reserved: int = 0
    outbox: dict[int, tuple[bytes, bool]] = field(default_factory=dict)
    framed_ever: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)

    def report(self, alarm: bool) -> None:
        n = self.last + 1
        if n > self.reserved:
            self.reserved = n + 3
        self.last = n
        while len(self.outbox) >= self.cap:
            victim = next((s for s in sorted(self.outbox) if not self.outbox[s][1]), min(self.outbox))
            del self.outbox[victim]
            self.dropped.add(victim)
        runs: list[list[int]] = []
        for s in sorted(self.outbox):
            if runs and runs[-1][1] + 1 == s:
                runs[-1][1] = s
            else:
                runs.append([s, s])
        if len(runs) > RUN_LIMIT:
            runs[RUN_LIMIT - 1][1] = runs[-1][1]
            del runs[RUN_LIMIT:]
        over = {"t": "alarm", "l": 60, "m": {}, "a": ["fire"], "w": 1_800_000_000} if alarm else {}
        body = body_for("bin", n, h=[v for run in runs for v in run], **over)
        self.outbox[n] = (build_frame(FRAME_REPORT, DEV, n, body, KEYS[DEV]), alarm)
        self.framed_ever.add(n)

    def ack(self, upto: int) -> None:
        for s in [s for s in self.outbox if s <= upto]:
            del self.outbox[s]


def stored(db: Path) -> set[int]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT seq FROM reports WHERE device=?", (DEV,))}
    finally:
        conn.close()


async def run(tmp: Path, acts: list[tuple[str, int]]) -> tuple[Device, set[int], list[str]]:
    reg = Registry(tmp / "reg")
    reg.add(DEV, kind="bin", zone="z", lat="1", lon="2", key=KEYS[DEV])
    db = tmp / "r.sqlite"
    dev = Device()
    violations: list[str] = []
    clock = [0.0]

    async def on_ack(frame: bytes) -> None:
        parsed = parse_frame(frame)
        assert verify_tag(parsed, KEYS[DEV])
        lost = sorted(s for s in dev.outbox if s <= parsed.seq and s not in stored(db))
        if lost:
            violations.append("ACK %d would delete %s, held by the device and not committed" % (parsed.seq, lost))
        dev.ack(parsed.seq)

    link = Link(name="ble:prop", kind="ble", send=on_ack)

    def make() -> IngestService:
        return IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(reg, load_policy()),
                             metrics=GatewayMetrics("gw"), batch_ms=2, gap_hold_s=GAP_HOLD_S,
                             monotonic=lambda: clock[0])

    async def settle(ingest: IngestService) -> None:
        for _ in range(300):
            await asyncio.sleep(0.002)
            if not ingest._tasks and ingest._queue.empty():
                return

    async def deliver(ingest: IngestService, seqs: list[int], suppressed: set[int]) -> None:
        for s in seqs:
            if s in dev.outbox and s not in suppressed:
                ingest.feed(dev.outbox[s][0], link)
        await settle(ingest)

    ingest = make()
    await ingest.start()
    suppressed: set[int] = set()
    for act, arg in acts:
        pending = sorted(dev.outbox)
        if act == "report":
            dev.report(bool(arg))
        elif act == "send" and pending:
            await deliver(ingest, [pending[arg % len(pending)]], suppressed)
        elif act == "resend":
            await deliver(ingest, pending, suppressed)
        elif act == "suppress" and pending:
            suppressed.add(pending[arg % len(pending)])
        elif act == "time":
            clock[0] += arg
        elif act == "reboot":
            dev.last = dev.reserved
        elif act == "restart":
            await ingest.stop()
            ingest.close()
            ingest.store.close()
            ingest = make()
            await ingest.start()
    # The link delivers again and the device goes on reporting: re-send rounds until the outbox is empty.
    for _ in range(12):
        if not dev.outbox:
            break
        clock[0] += 60
        dev.report(False)
        await deliver(ingest, sorted(dev.outbox), set())
    await ingest.stop()
    ingest.close()
    ingest.store.close()
    reg.close()
    return dev, stored(db), violations


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
# a man in the middle keeps alarm 2 back and relays 3; hours pass and 3 is re-sent (the timed hold
# acknowledged past 2 and the device deleted it)
@example([("report", 0), ("send", 0), ("report", 1), ("report", 0), ("suppress", 0), ("resend", 0),
          ("time", 120), ("resend", 0), ("time", 120), ("resend", 0)])
# the cap drops non-alarms around a kept alarm, reboots between: runs beyond the limit are merged
@example([("report", 1), ("reboot", 0), ("report", 0), ("reboot", 0), ("report", 0), ("report", 1),
          ("reboot", 0), ("report", 0), ("report", 0), ("report", 0), ("reboot", 0), ("report", 0),
          ("send", 2), ("time", 60), ("resend", 0)])
def test_no_ack_covers_a_held_frame_and_the_outbox_drains(acts: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        dev, seqs, violations = asyncio.run(run(Path(d), acts))
    assert violations == []
    assert dev.outbox == {}, "the ACK stalled with %s still held" % sorted(dev.outbox)
    # every frame the device did not drop at its cap is stored, and nothing else
    assert seqs == dev.framed_ever - dev.dropped | (seqs & dev.dropped)
    assert seqs <= dev.framed_ever
