"""Fixtures of the web tests: a real registry and SQLite store fed through the gateway's
verification pipeline (frames built and HMAC-tagged like a device does), and the web app
served by aiohttp's test server on a free loopback port."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.metrics import GatewayMetrics
from gateway.protocol.frame import FRAME_REPORT, build_frame
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.pipeline.verify import Verifier
from gateway.storage import ReportQueries, ReportRecord, ReportStore
from gateway.web.app import create_app
from gateway.web.retention import RetentionSettings

# 2026-11-21 12:00:00 UTC: a fixed "now" so every assertion about time is deterministic.
NOW = 1795262400
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"

DEVICES = [
    # id, kind, zone, lat, lon
    ("sl-01", "streetlight", "centre", "52.3702", "4.8952"),
    ("sl-02", "streetlight", "centre", "52.3710", "4.8990"),
    ("sl-03", "streetlight", "north", "52.3800", "4.9000"),
    ("bin-01", "bin", "centre", "52.3705", "4.8960"),
    ("bin-02", "bin", "north", "52.3790", "4.9010"),
    ("bin-03", "bin", "north", "52.3795", "4.9020"),
]


@dataclass
class Fleet:
    """A fed gateway state: registry, writer store, read API, metrics, and a way to add reports."""

    registry: Registry
    store: ReportStore
    queries: ReportQueries
    metrics: GatewayMetrics
    retention: RetentionSettings
    verifier: Verifier
    seqs: dict[str, int]

    def verify(self, device: str, body: dict[str, Any], *, at: float, link: str = "serial:/dev/pts/9") -> ReportRecord:
        """Build the device's next authenticated frame and pass it through the gateway's verifier."""
        self.seqs[device] = self.seqs.get(device, 0) + 1
        raw = build_frame(FRAME_REPORT, device, self.seqs[device], body, self.registry.key(device))
        self.metrics.reports_in(link.split(":")[0]).inc()
        return self.verifier.verify(raw, link=link, now=at).record

    def store_batch(self, records: list[ReportRecord]) -> None:
        """Commit verified records in one transaction, as the gateway's batched writer does."""
        result = self.store.insert_batch(records)
        assert len(result.inserted) == len(records)
        self.metrics.reports_stored.inc(len(records))

    def report(self, device: str, body: dict[str, Any], *, at: float, link: str = "serial:/dev/pts/9") -> None:
        """Send one report through frame building, verification and storage, like ingest does."""
        self.store_batch([self.verify(device, body, at=at, link=link)])


def feed_day(fleet: Fleet) -> None:
    """Six hours of windows for the fleet, hourly energy, a daily lid count and two alarms."""
    batch: list[ReportRecord] = []

    def report(device: str, body: dict[str, Any], *, at: float, link: str = "serial:/dev/pts/9") -> None:
        batch.append(fleet.verify(device, body, at=at, link=link))

    win = 900
    start = NOW - 6 * 3600
    for i in range(24):
        w = start + i * win
        hour_of = (w // 3600) % 24
        for n, dev in enumerate(("sl-01", "sl-02")):
            lamp = 1 if (dev == "sl-02" and i >= 20) else 0
            report(dev, {"t": "win", "k": "streetlight", "w": w, "l": win,
                               "m": {"mot": 5 + (i % 7) + n, "lux": 10 * (i % 5), "lvl": 50 + 10 * n, "lamp": lamp},
                               "e": {"mot": 500}}, at=w + win + 2)
        for n, dev in enumerate(("bin-01", "bin-02")):
            report(dev, {"t": "win", "k": "bin", "w": w, "l": win,
                               "m": {"fill": min(100, 10 * (i // 4) + 20 * n), "temp": 12 + n, "tilt": 0, "bat": 80}},
                         at=w + win + 5, link="ble:AA:BB:CC:00:00:0%d" % n)
        if (w + win) % 3600 == 0:
            for dev in ("sl-01", "sl-02"):
                report(dev, {"t": "hour", "k": "streetlight", "w": w + win - 3600, "l": 3600,
                                   "m": {"wh": 40 + hour_of}}, at=w + win + 3)
    report("sl-02", {"t": "alarm", "k": "streetlight", "w": NOW - 3600, "l": 60, "m": {}, "a": ["lamp_fail"]},
                 at=NOW - 3590)
    report("bin-02", {"t": "alarm", "k": "bin", "w": NOW - 1200, "l": 60, "m": {"temp": 71}, "a": ["fire"]},
                 at=NOW - 1190, link="ble:AA:BB:CC:00:00:01")
    report("bin-01", {"t": "day", "k": "bin", "w": NOW - NOW % 86400 - 86400, "l": 86400,
                            "m": {"lid": 23}, "e": {"lid": 500}}, at=NOW - 40000, link="ble:AA:BB:CC:00:00:00")
    fleet.store_batch(batch)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Registry with 6 devices (sl-03 and bin-03 never report; bin-03 revoked), store fed with a morning."""
    policy = load_policy()
    registry = Registry(tmp_path / "registry")
    for dev, kind, zone, lat, lon in DEVICES:
        registry.add(dev, kind=kind, zone=zone, lat=lat, lon=lon)
    registry.revoke("bin-03")
    store = ReportStore(tmp_path / "reports.sqlite", gateway_id="gw-test")
    metrics = GatewayMetrics("gw-test")
    fl = Fleet(registry=registry, store=store, queries=ReportQueries(tmp_path / "reports.sqlite"),
               metrics=metrics, retention=RetentionSettings(policy, path=tmp_path / "retention.json"),
               verifier=Verifier(registry, policy), seqs={})
    feed_day(fl)
    yield fl
    fl.queries.close()
    store.close()
    registry.close()


AppFactory = Callable[..., Any]


@pytest.fixture
async def client(fleet: Fleet) -> AsyncIterator[TestClient]:
    """A test client against the app over the fed fleet, clock fixed at NOW."""
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN,
                     retention=fleet.retention, clock=lambda: float(NOW), max_body_bytes=4096,
                     body_timeout_s=1.0)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        yield c


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    """Authorization header for the admin API."""
    return {"Authorization": f"Bearer {token}"}
