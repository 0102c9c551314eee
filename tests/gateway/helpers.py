"""Test helpers for the gateway suite: report bodies and frames built with gateway.protocol."""

from __future__ import annotations

from typing import Any

from gateway.protocol import FRAME_REPORT, build_frame

WINDOW_T0 = 1_790_000_100 - (1_790_000_100 % 900)


def body_for(kind: str, seq: int, **over: Any) -> dict[str, Any]:
    """A valid report body of ``kind`` whose values depend on ``seq`` (so rows differ)."""
    if kind == "bin":
        body: dict[str, Any] = {"t": "win", "k": "bin", "w": WINDOW_T0 + 900 * seq, "l": 900,
                                "m": {"fill": (seq * 10) % 100, "temp": 12}, "e": {}, "fw": "0.1"}
    else:
        body = {"t": "win", "k": "streetlight", "w": WINDOW_T0 + 900 * seq, "l": 900,
                "m": {"lux": 30, "lvl": 60, "lamp": 0, "mot": seq % 7}, "e": {"mot": 500}}
    body.update(over)
    return body


def report_frame(device: str, seq: int, key: bytes, kind: str = "bin", **over: Any) -> bytes:
    """An authenticated REPORT frame."""
    return build_frame(FRAME_REPORT, device, seq, body_for(kind, seq, **over), key)
