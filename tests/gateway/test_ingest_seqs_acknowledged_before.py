"""Seqs a board no longer holds that were acknowledged before but are not in this store are a WARNING.

Disaster-recovery drill: after an older backup of the store was restored, the boards (which send ``h``)
no longer held the reports the gateway had acknowledged after that backup, and the gateway acknowledged
past them with a DEBUG line only (and ``civicedge_seqs_not_held_total``): nobody learnt that the store is
behind what was acknowledged. Now a stretch longer than a reboot's seq reservation can skip, that the
board's ``h`` leaves out while its outbox is below its cap, above a floor this store has, is a WARNING per
device (at most once per 10 min, with the count since) naming the seqs and the likely causes. The normal
gaps stay quiet: a board new to this store (``--seq-start``), a reboot's skip, drops at a full outbox.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest
from conftest import KEYS
from helpers import report_frame

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.protocol import parse_frame
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportStore

pytestmark = pytest.mark.timeout(60)
LOST = "acknowledged before"


class _Gateway:
    """An IngestService on a real store file, a link recording the ACKs, a settable log clock."""

    def __init__(self, registry: Registry, path: Path, log_now: list[float]) -> None:
        self.store = ReportStore(path, gateway_id="gw")
        self.metrics = GatewayMetrics("gw")
        self.ingest = IngestService(store=self.store, verifier=Verifier(registry, load_policy()), metrics=self.metrics,
                                    batch_ms=10, gap_hold_s=15.0, monotonic=lambda: 1000.0,
                                    log_monotonic=lambda: log_now[0])
        self.acked: dict[str, int] = {}
        self.link = Link(name="serial:test", kind="serial", send=self._ack)

    async def _ack(self, frame: bytes) -> None:
        parsed = parse_frame(frame)
        self.acked[parsed.device_id] = max(self.acked.get(parsed.device_id, 0), parsed.seq)

    async def send(self, dev: str, seq: int, h: list[int]) -> None:
        kind = "streetlight" if dev.startswith("sl") else "bin"
        self.ingest.feed(report_frame(dev, seq, KEYS[dev], kind, h=h), self.link)
        for _ in range(300):
            await asyncio.sleep(0.01)
            if not self.ingest._tasks and self.ingest._queue.empty():  # noqa: SLF001 - nothing in flight
                return
        raise AssertionError("ingest did not settle")

    async def stop(self) -> None:
        await self.ingest.stop()
        self.ingest.close()
        self.store.close()


def _lost_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if LOST in r.getMessage() and r.levelno >= logging.INFO]


async def test_a_restored_older_store_warns_once_per_device_with_the_seqs(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log_now = [0.0]
    path = tmp_path / "reports.sqlite"
    gw = _Gateway(registry, path, log_now)
    await gw.ingest.start()
    for seq in range(1, 31):  # acknowledged at once: the board holds nothing below each new report
        await gw.send("sl-1", seq, [])
    await gw.send("bin-1", 1, [])
    await gw.stop()
    shutil.copyfile(path, tmp_path / "backup.sqlite")  # the nightly backup (a stopped gateway: one file)

    gw = _Gateway(registry, path, log_now)
    await gw.ingest.start()
    for seq in range(31, 71):
        await gw.send("sl-1", seq, [])
    for seq in (33, 65, 97):  # a deep-sleeping bin: one report per wake, each boot skips the rest of its block
        await gw.send("bin-1", seq, [])
    await gw.stop()
    assert gw.acked == {"sl-1": 70, "bin-1": 97}

    # The drill: the older backup restored over the store; the boards go on with what they hold.
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    shutil.copyfile(tmp_path / "backup.sqlite", path)
    caplog.clear()
    gw = _Gateway(registry, path, log_now)
    await gw.ingest.start()
    try:
        await gw.send("sl-1", 71, [])      # framed after 70 was acknowledged: 31..70 acknowledged, not here
        await gw.send("sl-1", 72, [71, 71])
        await gw.send("bin-1", 129, [])    # 2..128 (97 among them) acknowledged before
        assert gw.acked == {"sl-1": 72, "bin-1": 129}  # given up: the boards no longer hold them
        assert gw.metrics.value("civicedge_seqs_not_held_total") == 40 + 127
        lines = _lost_lines(caplog)
        assert [(r.levelno, r.getMessage().split(":")[0]) for r in lines] == [
            (logging.WARNING, "sl-1"), (logging.WARNING, "bin-1")], [r.getMessage() for r in lines]
        text = lines[0].getMessage()
        assert text.startswith("sl-1: seqs 31..70 were acknowledged before but are not in this store"), text
        assert "a restored older backup" in text and "another gateway" in text
        assert lines[1].getMessage().startswith("bin-1: seqs 2..128 were acknowledged before"), lines[1].getMessage()
        assert all(KEYS[dev].hex() not in r.getMessage() for r in caplog.records for dev in KEYS)

        # Another such stretch of sl-1 (say a board on two gateways): counted, not another line, however late
        await gw.send("sl-1", 120, [])
        log_now[0] += 3600.0
        await gw.send("sl-1", 170, [])
        assert gw.acked["sl-1"] == 170 and len(_lost_lines(caplog)) == 2
        assert gw.metrics.value("civicedge_seqs_not_held_total") == 40 + 127 + 47 + 49
    finally:
        await gw.stop()
    assert len(_lost_lines(caplog)) == 2  # no closing line: the count is in the metric


async def test_normal_gaps_do_not_warn(registry: Registry, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gw = _Gateway(registry, tmp_path / "reports.sqlite", [0.0])
    await gw.ingest.start()
    sent: list[tuple[str, int, list[int]]] = [
        ("bin-2", 1000, []),         # new to this store: provisioned with --seq-start 1000
        ("sl-1", 40, [33, 39]),      # new to this store, its first reports skipped at a reboot (1..32)
        ("bin-1", 1, []), ("bin-1", 33, []), ("bin-1", 65, []),  # a deep-sleeping bin: 31 skipped at each wake
        ("bin-2", 1001, []), ("bin-2", 1032, []),  # a reboot after 1001 skipped the rest of its block
    ]
    for dev, seq, h in sent:
        await gw.send(dev, seq, h)
    for seq in range(33, 40):
        await gw.send("sl-1", seq, list(range(33, seq)) and [33, seq - 1])
    assert gw.acked == {"bin-2": 1032, "sl-1": 40, "bin-1": 65}
    # Out of reach for long: its outbox full (63 held below the new report), the oldest 41..100 dropped at its
    # cap; the report framed then arrives first and says so.
    await gw.send("sl-1", 164, [101, 163])
    assert gw.acked["sl-1"] == 100  # 41..100 passed; 101..163 held: the ACK waits for them
    not_held = gw.metrics.value("civicedge_seqs_not_held_total")
    try:
        assert not_held == 999 + 32 + 31 + 31 + 30 + 60
        assert not _lost_lines(caplog), [r.getMessage() for r in _lost_lines(caplog)]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], \
            [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        await gw.stop()
