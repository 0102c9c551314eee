"""A seq gap given up after the timed hold is a WARNING, at most one line per device per 10 min.

QA finding (LOW-9): after a backup was restored, the reports a board without ``h`` had been ACKed for
after the backup were passed at INFO (``gap accepted seqs=2137..2251: never arrived``), invisible at the
default log level, though it is data the city lost.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from conftest import KEYS
from helpers import report_frame

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.pipeline.ingest import GAP_LOG_EVERY_S
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportStore


async def _settle(ingest: IngestService) -> None:
    for _ in range(200):
        await asyncio.sleep(0.01)
        if not ingest._tasks and ingest._queue.empty():  # noqa: SLF001 - nothing in flight
            return


async def test_a_gap_given_up_is_a_warning_rate_limited_per_device(registry: Registry, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    now = [1000.0]
    ingest = IngestService(store=ReportStore(tmp_path / "r.sqlite", gateway_id="gw"),
                           verifier=Verifier(registry, load_policy()), metrics=GatewayMetrics("gw"),
                           batch_ms=10, gap_hold_s=15.0, monotonic=lambda: now[0])
    await ingest.start()
    acked: dict[str, int] = {}

    async def ack(frame: bytes) -> None:
        from gateway.protocol import parse_frame

        parsed = parse_frame(frame)
        acked[parsed.device_id] = max(acked.get(parsed.device_id, 0), parsed.seq)

    link = Link(name="serial:test", kind="serial", send=ack)

    async def send(dev: str, *seqs: int) -> None:
        for seq in seqs:
            ingest.feed(report_frame(dev, seq, KEYS[dev]), link)
        await _settle(ingest)

    def gap_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "gap accepted" in r.getMessage()]

    await send("bin-1", 1, 10)  # 2..9 were ACKed to the board after the backup the store came from
    await send("bin-2", 1, 5)
    now[0] += 16.0
    await send("bin-1", 10)
    await send("bin-2", 5)
    assert acked == {"bin-1": 10, "bin-2": 5}
    lines = gap_lines()
    assert [r.levelno for r in lines] == [logging.WARNING] * 2, [r.getMessage() for r in lines]
    assert lines[0].getMessage().startswith("bin-1: gap accepted seqs=2..9: never arrived, acknowledging past them")
    assert "lost" in lines[0].getMessage() and lines[1].getMessage().startswith("bin-2: gap accepted seqs=2..4")

    await send("bin-1", 20)  # another gap of bin-1 within 10 min: counted, not a line
    now[0] += 16.0
    await send("bin-1", 20)
    assert acked["bin-1"] == 20 and len(gap_lines()) == 2
    now[0] += GAP_LOG_EVERY_S
    await send("bin-1", 30)
    now[0] += 16.0
    await send("bin-1", 30)
    last = gap_lines()[-1].getMessage()
    assert len(gap_lines()) == 3 and "seqs=21..29" in last and "(9 more seq(s) of this device given up" in last, last

    await send("bin-1", 40)  # held back at stop: one closing line with the count
    now[0] += 16.0
    await send("bin-1", 40)
    await ingest.stop()
    ingest.close()
    closing = [r for r in caplog.records if r.getMessage().endswith("given up since the last such line (never arrived, "
                                                                   "acknowledged past)")]
    assert len(closing) == 1 and closing[0].getMessage().startswith("9 more seq(s) of bin-1 given up")
    assert closing[0].levelno == logging.WARNING
