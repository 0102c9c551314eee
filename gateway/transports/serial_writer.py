"""Non-blocking frame writes to a serial port (a tty or a ``socket://`` connection): the event loop never
waits for a board to read."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import Callable

log = logging.getLogger(__name__)

# Bytes of encoded frames kept for a port whose OS buffer is full (about 100 ACKs). Beyond it a frame
# is dropped: an ACK's floor is cumulative and a board re-sends what was not acknowledged, so a newer
# ACK replaces a lost one; an old one waiting longer says nothing the board needs.
MAX_QUEUED_BYTES = 8192
# A board that has taken no byte for this long while frames wait is said to have stopped reading...
STALL_WARN_S = 10.0
# ... at most once per this many seconds while it stays so.
STALL_LOG_EVERY_S = 60.0


class FrameWriter:
    """Writes whole encoded frames to a non-blocking file descriptor from the event loop.

    A frame is offered to the OS at once; what the OS does not take (its buffer is full because the
    board stopped reading) waits in a bounded FIFO that the loop's writer callback drains as the port
    becomes writable. A frame's unwritten remainder always goes out before the next frame, so a partial
    write never cuts into the framing. A frame that does not fit in the FIFO is refused whole.

    Args:
        loop: the running event loop (its writer callback drains the FIFO).
        fd: the port's file descriptor (a tty or a connected socket), in non-blocking mode.
        name: the link name, for the log.
        on_error: called once with the error when a queued write fails (the port went away).
        max_queued_bytes: bound of the FIFO.
        stall_warn_s: a WARNING once the board has taken nothing for this long while frames wait.
        clock: monotonic seconds (tests).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, *, name: str, on_error: Callable[[OSError], None],
                 max_queued_bytes: int = MAX_QUEUED_BYTES, stall_warn_s: float = STALL_WARN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._loop = loop
        self._fd = fd
        self._name = name
        self._on_error = on_error
        self._max = max_queued_bytes
        self._stall_warn_s = stall_warn_s
        self._clock = clock
        self._queue: deque[memoryview] = deque()
        self._queued = 0
        self._since = 0.0  # last time the OS took a byte while frames waited (or they began to wait)
        self._warned_at: float | None = None
        self._closed = False
        self.dropped = 0  # frames refused because the FIFO was full
        self._stall_dropped = 0  # of those, since frames last began to wait (the current stall)

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting for the port to become writable."""
        return self._queued

    def write(self, data: bytes) -> bool:
        """Write ``data`` (one whole encoded frame) or queue it; False if refused (the FIFO is full).

        Raises:
            OSError: the port failed (not ``BlockingIOError``, which only means "queue it").
        """
        if self._closed:
            raise OSError("%s is closed" % self._name)
        if self._queue:
            if self._queued + len(data) > self._max:
                self.dropped += 1
                self._stall_dropped += 1
                self._warn_if_stalled()
                return False
            self._queue.append(memoryview(data))
            self._queued += len(data)
            return True
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            self._queue.append(memoryview(data)[n:])
            self._queued += len(data) - n
            self._since = self._clock()
            self._loop.add_writer(self._fd, self._on_writable)
        return True

    def _on_writable(self) -> None:
        progressed = False
        while self._queue:
            head = self._queue[0]
            try:
                n = os.write(self._fd, head)
            except BlockingIOError:
                break
            except OSError as exc:  # EIO/ENXIO, EPIPE/ECONNRESET: the port went away; the reader sees it too
                log.debug("write to %s failed: %s", self._name, exc)
                self.close()
                self._on_error(exc)
                return
            if n:
                progressed = True
                self._queued -= n
            if n < len(head):
                self._queue[0] = head[n:]
                break
            self._queue.popleft()
        if progressed:
            self._since = self._clock()
        if not self._queue:
            self._loop.remove_writer(self._fd)
            if self._warned_at is not None:
                log.info("%s reads again; %d ACKs were dropped while it did not", self._name, self._stall_dropped)
                self._warned_at = None
            self._stall_dropped = 0  # the stall is over: the next one counts its own

    def _warn_if_stalled(self) -> None:
        now = self._clock()
        stalled = now - self._since
        if stalled < self._stall_warn_s:
            return
        if self._warned_at is not None and now - self._warned_at < STALL_LOG_EVERY_S:
            return
        self._warned_at = now
        log.warning("%s has not read for %.0f s (%d bytes wait): ACKs that do not fit are dropped (%d since it "
                    "stopped reading); the board re-sends its reports, a later ACK covers them", self._name, stalled,
                    self._queued, self._stall_dropped)

    def close(self) -> None:
        """Stop writing and forget what waits (idempotent; never blocks)."""
        if self._closed:
            return
        self._closed = True
        if self._queue:
            self._loop.remove_writer(self._fd)
        self._queue.clear()
        self._queued = 0
