"""From authenticated bin frames through the gateway's real ingest pipeline to a collection plan.

Frames (protocol v1, HMAC with each device's key) go through the gateway's verifier and policy
gate and are committed to SQLite; the plan is then made from that store, exactly as in service.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.metrics import GatewayMetrics
from gateway.pipeline.ingest import IngestService, Link
from gateway.pipeline.verify import Verifier
from gateway.protocol.frame import FRAME_REPORT, build_frame
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.routes.model import Reason
from gateway.routes.planner import PlanSettings, plan_collection
from gateway.routes.source import GatewayBinSource
from gateway.storage import ReportStore

from routes_helpers import DAY, DEPOT, T0

pytestmark = pytest.mark.timeout(60)
WIN = 900
FILL_PERIOD = 21600  # fill release_every_s in firmware/policy.json: the level at the end of each 6 h


def win(w: int, tilt: int = 0) -> dict[str, Any]:
    return {"t": "win", "k": "bin", "w": w, "l": WIN, "m": {"temp": 14, "tilt": tilt, "bat": 80},
            "e": {}, "fw": "1.0"}


def fill_release(w: int, fill: int) -> dict[str, Any]:
    return {"t": "win", "k": "bin", "w": w, "l": FILL_PERIOD, "m": {"fill": fill}, "fw": "1.0"}


async def test_frames_to_plan(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    bins = {"bin-full": [80, 90, 90, 90], "bin-low": [20, 20, 20, 20], "bin-fire": [30, 30, 30, 30]}
    for i, dev in enumerate(bins):
        registry.add(dev, kind="bin", zone="harbour", lat=f"52.3{7 + i}", lon="4.89")
    frames: list[bytes] = []
    for dev, fills in bins.items():
        key = registry.key(dev)
        # the fill levels at the end of the last four 6-hour periods before the round, as a bin releases them
        # (no fill in its 15-minute windows: the policy gate refuses that)
        last = T0 - T0 % FILL_PERIOD
        bodies = [win(T0 - (4 - k) * WIN) for k in range(4)]
        bodies += [fill_release(last - (len(fills) - k) * FILL_PERIOD, f) for k, f in enumerate(fills)]
        bodies.append({"t": "day", "k": "bin", "w": T0 - T0 % 86400 - 86400, "l": 86400, "m": {"lid": 412},
                       "e": {"lid": 500}})
        if dev == "bin-fire":
            bodies.append({"t": "alarm", "k": "bin", "w": T0 - 3600 - (T0 - 3600) % 60, "l": 60, "m": {"temp": 71},
                           "a": ["fire"]})
        frames += [build_frame(FRAME_REPORT, dev, seq, body, key) for seq, body in enumerate(bodies, start=1)]

    metrics = GatewayMetrics("routes-e2e")
    store = ReportStore(tmp_path / "reports.sqlite", gateway_id="gw-e2e")
    service = IngestService(store=store, verifier=Verifier(registry, load_policy()), metrics=metrics, batch_ms=10)
    await service.start()
    acks: list[bytes] = []

    async def send(frame: bytes) -> None:
        acks.append(frame)

    link = Link(name="serial:test", kind="serial", send=send)
    for raw in frames:
        service.feed(raw, link)
    async with asyncio.timeout(20):
        while metrics.reports_stored._value.get() < len(frames):  # noqa: SLF001 - counter read in a test
            await asyncio.sleep(0.01)
    await service.stop()
    service.close()
    store.close()

    loaded = GatewayBinSource(tmp_path / "reports.sqlite", registry).load(
        PlanSettings(day=DAY, depot=DEPOT).round_start)
    registry.close()
    by_id = {b.id: b for b in loaded}
    assert [r.fill for r in by_id["bin-full"].readings] == [0.8, 0.9, 0.9, 0.9]
    assert [r.t for r in by_id["bin-full"].readings] == [last - 3 * FILL_PERIOD + k * FILL_PERIOD for k in range(4)]
    assert by_id["bin-fire"].alarms == {"fire"} and by_id["bin-low"].alarms == frozenset()
    plan = plan_collection(loaded, PlanSettings(day=DAY, depot=DEPOT, time_limit_s=0))
    stops = [s.candidate for r in plan.routes for s in r.stops]
    assert {(c.bin.id, c.reason) for c in stops} == {("bin-fire", Reason.FIRE), ("bin-full", Reason.FULL)}
    assert all(r.stops[0].candidate.bin.id == "bin-fire" for r in plan.routes if len(r.stops) > 1)
    assert all(c.bin.zone == "harbour" for c in stops)
