"""Frames of a retired device: refused with their own reason (not a security event), never acknowledged,
warned about once per device per interval naming ``devices reinstate``; accepted again once reinstated."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from conftest import KEYS
from helpers import report_frame

from gateway.errors import RejectedReport
from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.pipeline.ingest import RETIRED_LOG_EVERY_S
from gateway.protocol import FRAME_ACK, parse_frame
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportStore
from hil.cli.main import main


def test_a_retired_devices_authentic_frames_are_refused_as_retired_and_forged_ones_as_hmac(registry: Registry) -> None:
    verifier = Verifier(registry, load_policy())
    registry.retire("bin-2")
    with pytest.raises(RejectedReport) as info:
        verifier.verify(report_frame("bin-2", 1, KEYS["bin-2"]), link="l", now=0)
    assert (info.value.reason, str(info.value)) == ("retired", "device bin-2 is retired")
    # The tag is checked first: "retired" always means the board itself is still in reach.
    with pytest.raises(RejectedReport) as info:
        verifier.verify(report_frame("bin-2", 1, KEYS["bin-1"]), link="l", now=0)
    assert info.value.reason == "hmac"
    registry.reinstate("bin-2")
    assert verifier.verify(report_frame("bin-2", 1, KEYS["bin-2"]), link="l", now=0).record.seq == 1


def test_a_retire_by_the_cli_is_seen_within_the_cache_time(registry: Registry) -> None:
    verifier = Verifier(registry, load_policy(), cache_s=0.2)
    verifier.verify(report_frame("bin-2", 1, KEYS["bin-2"]), link="l", now=0)
    assert main(["gateway", "devices", "--registry", str(registry.path), "retire", "bin-2"]) == 0
    time.sleep(0.25)
    with pytest.raises(RejectedReport) as info:
        verifier.verify(report_frame("bin-2", 2, KEYS["bin-2"]), link="l", now=0)
    assert info.value.reason == "retired"


async def test_retired_frames_are_not_stored_nor_acknowledged_and_warned_per_device_rate_limited(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "r.sqlite"
    wall = [0.0]
    metrics = GatewayMetrics("gw")
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=metrics, batch_ms=10, log_monotonic=lambda: wall[0])
    await ingest.start()
    acks: list[tuple[str, int]] = []

    async def send(frame: bytes) -> None:
        ack = parse_frame(frame)
        assert ack.type == FRAME_ACK
        acks.append((ack.device_id, ack.seq))

    usb = Link(name="serial:/dev/ttyUSB0", kind="serial", send=send)
    ingest.feed(report_frame("bin-1", 1, KEYS["bin-1"]), usb)
    ingest.feed(report_frame("bin-2", 1, KEYS["bin-2"]), usb)
    await _until(lambda: len(acks) == 2)
    registry.retire("bin-1")
    registry.retire("bin-2")
    caplog.set_level(logging.WARNING, logger="gateway")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    ingest.feed(report_frame("bin-1", 2, KEYS["bin-1"]), usb)
    [line] = warnings()
    assert line.startswith("retired device bin-1 still sends on serial:/dev/ttyUSB0: its frames are refused and not "
                           "acknowledged, so the board keeps its reports for the gateway that serves it now")
    assert "`civicedge gateway devices reinstate bin-1`" in line and "/api/admin/devices/bin-1/reinstate" in line
    assert "revoke" not in line and KEYS["bin-1"].hex() not in caplog.text
    wall[0] = 1.0
    for seq in range(3, 8):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), usb)
    assert len(warnings()) == 1  # held back, counted
    ingest.feed(report_frame("bin-2", 2, KEYS["bin-2"]), usb)  # another device: its own line at once
    assert len(warnings()) == 2 and warnings()[1].startswith("retired device bin-2 still sends")
    wall[0] = RETIRED_LOG_EVERY_S + 1
    ingest.feed(report_frame("bin-1", 8, KEYS["bin-1"]), usb)
    assert len(warnings()) == 3 and "(5 more such frame(s) since the last such line)" in warnings()[2]
    ingest.feed(report_frame("bin-1", 9, KEYS["bin-1"]), usb)
    await asyncio.sleep(0.2)  # time for a commit and an ACK, were there any
    assert acks == [("bin-1", 1), ("bin-2", 1)]
    assert ReportQueries(db).count_reports() == 2
    assert metrics.value("civicedge_rejections_total", {"reason": "retired"}) == 9
    assert metrics.value("civicedge_rejections_total", {"reason": "revoked"}) == 0
    assert metrics.value("civicedge_rejections_total", {"reason": "hmac"}) == 0

    # back with this gateway: the frames the board kept are stored and acknowledged
    registry.reinstate("bin-1")
    for seq in range(2, 10):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), usb)
    await _until(lambda: ("bin-1", 9) in acks)
    assert ReportQueries(db).count_reports() == 10
    await ingest.stop()  # what the limit held back is said at stop
    assert "1 more frame(s) of retired device bin-1 refused since the last such line (not stored, not acknowledged)" \
        in warnings()
    ingest.close()
    ingest.store.close()


async def _until(done: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
