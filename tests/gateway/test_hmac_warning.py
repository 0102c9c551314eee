"""A registered board whose frames fail their HMAC check shows at the default log level.

QA finding: after ``devices rotate-key`` a board left on its old key lost all its data silently: each
frame was an INFO rejection and a counter; only unknown and revoked devices got a WARNING.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import KEYS
from helpers import report_frame

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.pipeline.ingest import HMAC_LOG_EVERY_S
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportStore


async def _ignore(frame: bytes) -> None:
    raise AssertionError("a frame failing its HMAC check is never acknowledged")


async def test_a_board_on_its_old_key_is_warned_about_per_device_rate_limited(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry.rotate_key("bin-1")  # the board keeps KEYS["bin-1"]
    wall = [0.0]
    metrics = GatewayMetrics("gw")
    ingest = IngestService(store=ReportStore(tmp_path / "r.sqlite", gateway_id="gw"),
                           verifier=Verifier(registry, load_policy()), metrics=metrics, batch_ms=10,
                           log_monotonic=lambda: wall[0])
    await ingest.start()
    usb = Link(name="serial:/dev/ttyUSB0", kind="serial", send=_ignore)
    caplog.set_level(logging.WARNING, logger="gateway")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    ingest.feed(report_frame("bin-1", 1, KEYS["bin-1"]), usb)
    assert len(warnings()) == 1
    line = warnings()[0]
    assert line.startswith("frames of registered device bin-1 fail their HMAC check on serial:/dev/ttyUSB0")
    assert "old key" in line and "rotate-key" in line
    assert KEYS["bin-1"].hex() not in caplog.text and registry.key("bin-1").hex() not in caplog.text
    wall[0] = 1.0
    for seq in range(2, 12):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), usb)
    assert len(warnings()) == 1  # held back, counted
    ingest.feed(report_frame("bin-2", 1, KEYS["sl-1"]), usb)  # another device: a line of its own at once
    assert len(warnings()) == 2 and "device bin-2" in warnings()[1]
    wall[0] = HMAC_LOG_EVERY_S + 1
    ingest.feed(report_frame("bin-1", 12, KEYS["bin-1"]), usb)
    assert len(warnings()) == 3 and "(10 more such frame(s) since the last such line)" in warnings()[2]
    ingest.feed(report_frame("bin-1", 13, KEYS["bin-1"]), usb)
    await ingest.stop()  # what the limit held back is said at stop
    assert warnings()[3] == ("1 more frame(s) of bin-1 failed their HMAC check since the last such line (not stored, "
                             "not acknowledged)")
    assert metrics.value("civicedge_rejections_total", {"reason": "hmac"}) == 14
    ingest.close()


async def test_the_warning_names_the_lossless_fix_first_and_does_not_claim_loss(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """QA drill: the line said "all its data is lost while this lasts" (the board keeps the reports, no ACK)
    and advised `provision --force --take-over`, which refuses a board with un-sent reports."""
    registry.rotate_key("bin-1")
    ingest = IngestService(store=ReportStore(tmp_path / "r.sqlite", gateway_id="gw"),
                           verifier=Verifier(registry, load_policy()), metrics=GatewayMetrics("gw"), batch_ms=10)
    await ingest.start()
    caplog.set_level(logging.WARNING, logger="gateway")
    ingest.feed(report_frame("bin-1", 1, KEYS["bin-1"]), Link(name="serial:x", kind="serial", send=_ignore))
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "lost while this lasts" not in line and "the board keeps its reports" in line
    lossless = line.index("PUT /api/admin/devices/bin-1")
    assert '"replace": true' in line[lossless:] and "/identity.json" in line
    assert lossless < line.index("--discard-unsent")
    await ingest.stop()
    ingest.close()
