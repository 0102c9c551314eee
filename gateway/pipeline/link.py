"""What a transport hands the ingest service with each frame: where it came from and how to answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable


@dataclass(frozen=True)
class Link:
    """Where a frame came from and how to answer on the same link.

    Attributes:
        name: ``serial:<port>`` or ``ble:<address>``.
        kind: ``serial`` or ``ble``.
        send: coroutine function sending one raw frame to the device (the transport encodes it).
        fresh: called (or None) when a report that came on this link was newly stored: it came from
            a device holding its key, where an ACK alone may answer a replayed, already stored frame.
    """

    name: str
    kind: str
    send: Callable[[bytes], Awaitable[None]]
    fresh: Callable[[], None] | None = None
