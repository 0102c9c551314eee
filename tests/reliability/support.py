"""Shared pieces of the reliability suite: fixed keys, valid frames, scale, ACK-recording links."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from gateway.pipeline.ingest import IngestService, Link
from gateway.protocol import FRAME_REPORT, build_frame, parse_frame

FULL = os.environ.get("CIVICEDGE_FULL") == "1"
# Same keys as tests/gateway/conftest.py KEYS (kept here so this package never imports another conftest).
KEYS = {"bin-1": bytes(range(32)), "bin-2": bytes(range(1, 33)), "sl-1": bytes(range(2, 34))}
WINDOW_T0 = 1_790_000_100 - (1_790_000_100 % 900)


def body_for(kind: str, seq: int, **over: Any) -> dict[str, Any]:
    """A valid report body of ``kind`` whose values depend on ``seq``."""
    if kind == "bin":
        # fill leaves only in its own 6-hourly release (policy release_every_s: every window it dates deposits)
        body: dict[str, Any] = {"t": "win", "k": "bin", "w": WINDOW_T0 + 900 * seq, "l": 900,
                                "m": {"bat": (seq * 10) % 100, "temp": 12}, "e": {}, "fw": "0.1"}
    else:
        # mot leaves only in its own 6-hourly release (policy; see mot_release in the gateway tests)
        body = {"t": "win", "k": "streetlight", "w": WINDOW_T0 + 900 * seq, "l": 900,
                "m": {"lux": 10 * (seq % 7), "lvl": 60, "lamp": 0}, "fw": "0.1.0"}
    body.update(over)
    return body


def report(device: str, seq: int, **over: Any) -> bytes:
    """An authenticated REPORT frame of a device of :data:`KEYS`."""
    kind = "streetlight" if device.startswith("sl") else "bin"
    return build_frame(FRAME_REPORT, device, seq, body_for(kind, seq, **over), KEYS[device])


class AckLink:
    """A link whose ACKs are recorded as (device, seq), as the device would receive them."""

    def __init__(self, name: str = "serial:/dev/fuzz") -> None:
        self.acks: list[tuple[str, int]] = []
        self.link = Link(name=name, kind=name.split(":")[0], send=self._send)

    async def _send(self, frame: bytes) -> None:
        ack = parse_frame(frame)
        self.acks.append((ack.device_id, ack.seq))

    def highest(self, device: str) -> int:
        """Highest cumulative ACK the device got (0 if none)."""
        return max((s for d, s in self.acks if d == device), default=0)


async def settle(ingest: IngestService, limit_s: float = 20.0) -> None:
    """Wait until every fed frame was handled and every queued report committed."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while loop.time() < end:
        await asyncio.sleep(0.01)
        if not ingest._tasks and ingest._queue.empty():
            await asyncio.sleep(0.05)
            if not ingest._tasks and ingest._queue.empty():
                return
    raise AssertionError("ingest did not settle within %.0f s" % limit_s)
