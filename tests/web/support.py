"""Shared pieces of the web tests: constants, the fed-gateway ``Fleet`` and what feeds it.

The fixtures built from these live in this package's conftest.py."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config.loader import parse_config
from gateway.config.model import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.pipeline.ingest import IngestService, Link
from gateway.protocol.frame import FRAME_REPORT, build_frame, parse_frame
from gateway.registry import Registry
from gateway.storage import ReportQueries, ReportStore
from gateway.web.retention import RetentionSettings

# 2026-11-21 12:00:00 UTC: a fixed "now" so every assertion about time is deterministic.
NOW = 1795262400
# The ingest clock: every report of the fixture is received 5 s before NOW (so before the publication
# mark of the entities at NOW, 12:00, so they show them at NOW; the CSV, whose marks are at hh:05, from
# 12:05).
RECEIVED_AT = NOW - 5
ADMIN_TOKEN = "d89e659708e32109fc2ee8ebffcfb55c"
# Hypothesis examples and fuzz rounds; CIVICEDGE_FULL=1 scales them up.
EXAMPLES = 1000 if os.environ.get("CIVICEDGE_FULL") == "1" else 60

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
    """A fed gateway: registry, store, ingest service, read API, metrics, retention settings."""

    registry: Registry
    store: ReportStore
    ingest: IngestService
    queries: ReportQueries
    metrics: GatewayMetrics
    retention: RetentionSettings
    seqs: dict[str, int] = field(default_factory=dict)
    acks: list[tuple[str, int]] = field(default_factory=list)

    def link(self, name: str) -> Link:
        """A link whose ACKs are recorded (what a device would receive)."""

        async def send(frame: bytes) -> None:
            ack = parse_frame(frame)
            self.acks.append((ack.device_id, ack.seq))

        return Link(name=name, kind=name.split(":")[0], send=send)

    def feed(self, device: str, body: dict[str, Any], *, link: str = "serial:/dev/pts/9") -> int:
        """Hand the device's next authenticated REPORT frame to the ingest service; return its seq."""
        self.seqs[device] = self.seqs.get(device, 0) + 1
        raw = build_frame(FRAME_REPORT, device, self.seqs[device], body, self.registry.key(device))
        self.ingest.feed(raw, self.link(link))
        return self.seqs[device]

    def rejected(self) -> float:
        """Total rejections counted by the gateway."""
        return sum(s.value for m in self.metrics.registry.collect() if m.name == "civicedge_rejections"
                   for s in m.samples if s.name.endswith("_total"))

    async def settle(self, *, stored: int, rejected: float = 0, timeout: float = 10.0) -> None:
        """Wait until the store holds ``stored`` reports and ``rejected`` frames were refused."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.queries.count_reports() < stored or self.rejected() < rejected:
            if loop.time() > deadline:
                raise TimeoutError(f"store has {self.queries.count_reports()} of {stored} reports, "
                                   f"{self.rejected()} of {rejected} rejections")
            await asyncio.sleep(0.01)

    async def report(self, device: str, body: dict[str, Any], *, link: str = "serial:/dev/pts/9") -> None:
        """Send one report and wait until it is committed."""
        before = self.queries.count_reports()
        self.feed(device, body, link=link)
        await self.settle(stored=before + 1)


def feed_morning(fleet: Fleet) -> int:
    """Six hours of windows for the fleet, hourly energy, the 6-hour PIR counts and bin fill levels, a
    daily lid count and two alarms.

    Returns the number of reports fed.
    """
    win = 900
    start = NOW - 6 * 3600
    n_reports = 0
    for i in range(24):
        w = start + i * win
        hour_of = (w // 3600) % 24
        for n, dev in enumerate(("sl-01", "sl-02")):
            lamp = 1 if (dev == "sl-02" and i >= 20) else 0
            fleet.feed(dev, {"t": "win", "k": "streetlight", "w": w, "l": win,
                             "m": {"lux": 10 * (i % 5), "lvl": 50 + 10 * n, "lamp": lamp}})
        for n, dev in enumerate(("bin-01", "bin-02")):
            fleet.feed(dev, {"t": "win", "k": "bin", "w": w, "l": win,
                             "m": {"temp": 12 + n, "tilt": 0, "bat": 80}},
                       link="ble:AA:BB:CC:00:00:0%d" % n)
        n_reports += 4
        if (w + win) % 3600 == 0:
            for dev in ("sl-01", "sl-02"):
                fleet.feed(dev, {"t": "hour", "k": "streetlight", "w": w + win - 3600, "l": 3600,
                                 "m": {"wh": 40 + hour_of}})
                n_reports += 1
    # At 12:00 each streetlight releases the morning's PIR passes (06:00-12:00) as one noisy count in
    # its own report, as the firmware does (policy: release_every_s 6 h, 500 milli-epsilon).
    for n, dev in enumerate(("sl-01", "sl-02")):
        fleet.feed(dev, {"t": "win", "k": "streetlight", "w": start, "l": 6 * 3600, "m": {"mot": 31 + n},
                         "e": {"mot": 500}})
    # ... and each bin its fill level at 12:00 (policy: fill release_every_s 6 h, the level at its end)
    for n, dev in enumerate(("bin-01", "bin-02")):
        fleet.feed(dev, {"t": "win", "k": "bin", "w": start, "l": 6 * 3600, "m": {"fill": 50 + 20 * n}},
                   link="ble:AA:BB:CC:00:00:0%d" % n)
    fleet.feed("sl-02", {"t": "alarm", "k": "streetlight", "w": NOW - 3600, "l": 60, "m": {}, "a": ["lamp_fail"]})
    fleet.feed("bin-02", {"t": "alarm", "k": "bin", "w": NOW - 1200, "l": 60, "m": {"temp": 71}, "a": ["fire"]},
               link="ble:AA:BB:CC:00:00:01")
    fleet.feed("bin-01", {"t": "day", "k": "bin", "w": NOW - NOW % 86400 - 86400, "l": 86400,
                          "m": {"lid": 23}, "e": {"lid": 500}}, link="ble:AA:BB:CC:00:00:00")
    return n_reports + 7


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    """Authorization header for the admin API."""
    return {"Authorization": f"Bearer {token}"}


def pty_gateway_config(tmp_path: Path, gateway_id: str, slave: int, *, admin: bool = False,
                       **sections: Any) -> GatewayConfig:
    """A gateway config: data under ``tmp_path``, one serial port on the pty ``slave``, HTTP on a free
    loopback port (with :data:`ADMIN_TOKEN` when ``admin``), plus any further ``sections``."""
    http: dict[str, Any] = {"listen": "127.0.0.1", "port": 0}
    if admin:
        token_file = tmp_path / "admin.token"
        token_file.write_text(ADMIN_TOKEN + "\n")
        token_file.chmod(0o600)
        http["admin_token_file"] = str(token_file)
    return parse_config({"gateway": {"id": gateway_id, "data_dir": str(tmp_path / "data")},
                         "serial": [{"port": os.ttyname(slave)}], "http": http, **sections}, source=None)
