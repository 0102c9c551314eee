"""The transport interface every link implements.

A transport owns its connections (and reconnects them); it hands every decoded frame, or a
link-level decode error to count, to a :data:`FrameSink` together with the :class:`Link` to
answer on. The gateway holds transports; it never subclasses one.
"""

from __future__ import annotations

from typing import Callable, Protocol

from gateway.errors import ProtocolError
from gateway.pipeline.ingest import Link

FrameSink = Callable[[bytes | ProtocolError, Link], None]


class Transport(Protocol):
    """A source of frames from devices (serial ports, BLE central)."""

    name: str

    async def run(self, sink: FrameSink) -> None:
        """Receive until cancelled, reconnecting as needed; never returns on a link failure."""

    async def close(self) -> None:
        """Release every port/connection (idempotent)."""
