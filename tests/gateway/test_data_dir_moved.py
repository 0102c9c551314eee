"""A data directory moved away (store and registry) while the gateway runs shows in its metrics, and its
log stays readable.

On-call QA drill (``mv data data.old``): /healthz said ``store_gone`` at once, but no metric did
(commit failures 0, store_damaged 0), so only CivicedgeNothingIngested paged, 20 min later; every
frame logged an ERROR "not verified: no key stored for device ..." (no rate limit) and was counted
under no rejection reason; /healthz said "restart the gateway" where the log said "stop, put the
store back, start".
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import KEYS, make_env
from helpers import report_frame

from gateway.config import load_config
from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.pipeline.ingest import UNVERIFIED_LOG_EVERY_S
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.service import STORE_GONE_ACTION, STORE_WATCH_S, Gateway
from gateway.storage import ReportStore

pytestmark = pytest.mark.timeout(60)
RULES = Path(__file__).resolve().parents[2] / "scripts" / "prometheus" / "civicedge-alerts.yml"


async def _ignore(frame: bytes) -> None:
    raise AssertionError("a frame that was not verified is never acknowledged")


async def test_frames_the_registry_cannot_check_are_counted_and_logged_once_a_minute(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wall = [0.0]
    metrics = GatewayMetrics("gw")
    ingest = IngestService(store=ReportStore(tmp_path / "r.sqlite", gateway_id="gw"),
                           verifier=Verifier(registry, load_policy()), metrics=metrics, batch_ms=10,
                           log_monotonic=lambda: wall[0])
    await ingest.start()
    usb = Link(name="serial:/dev/ttyUSB0", kind="serial", send=_ignore)
    caplog.set_level(logging.INFO, logger="gateway")
    shutil.rmtree(registry.key_path("bin-1").parent)  # the key files gone with their directory

    def errors() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]

    for seq in range(1, 21):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), usb)
    assert len(errors()) == 1, errors()
    assert "not verified" in errors()[0] and "no key stored for device bin-1" in errors()[0]
    assert "the board keeps it" in errors()[0]
    assert metrics.value("civicedge_rejections_total", {"reason": "registry_unreadable"}) == 20
    wall[0] = UNVERIFIED_LOG_EVERY_S + 1
    ingest.feed(report_frame("bin-1", 21, KEYS["bin-1"]), usb)
    assert len(errors()) == 2 and "(19 more such frame(s) since the last such line)" in errors()[1]
    assert KEYS["bin-1"].hex() not in caplog.text
    await ingest.stop()
    ingest.close()


async def test_a_moved_data_directory_is_a_metric_and_says_the_same_thing_as_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gw = Gateway(load_config(make_env(tmp_path)))
    await gw.start()
    try:
        assert gw.metrics.value("civicedge_store_gone") == 0
        (tmp_path / "data").rename(tmp_path / "data.old")
        assert gw.metrics.value("civicedge_store_gone") == 1  # at the next scrape, as /healthz

        def errors() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]

        for _ in range(int(STORE_WATCH_S * 10) + 20):  # the store's watch logs it
            if errors():
                break
            await asyncio.sleep(0.1)
        [gone] = [p for p in gw._health() if p.code == "store_gone"]
        [line] = errors()
        assert str(gone) == line and str(gone).endswith(STORE_GONE_ACTION)
        assert "restart the gateway" not in str(gone) and "stop the gateway, put the store back" in str(gone)
    finally:
        await gw.stop()


def test_the_store_gone_metric_pages_soon() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
             if "civicedge_store_gone" in r["expr"]]
    assert [r["alert"] for r in rules] == ["CivicedgeStoreGone"]
    assert rules[0]["labels"] == {"severity": "page"} and rules[0].get("for", "0m") in ("0m", "1m", "2m")
    assert "Deleted or replaced" in rules[0]["annotations"]["runbook"]
