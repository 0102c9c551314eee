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
        send_nowait: the same as ``send`` for a link whose writes never wait (a serial port queues what the
            board has not read yet), or None. Ingest answers through it inline, without a Task and a
            timeout per ACK (most of an ACK's cost on a busy gateway, where nearly every report gets its own).
            It raises as ``send`` does (:class:`~gateway.errors.TransportError`, ``OSError``).
    """

    name: str
    kind: str
    send: Callable[[bytes], Awaitable[None]]
    fresh: Callable[[], None] | None = None
    send_nowait: Callable[[bytes], None] | None = None
