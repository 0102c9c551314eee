"""A pseudo-terminal that looks like a USB serial port, bridged to a board's console or UART.

The slave path (``/dev/pts/N``) is what pyserial, mpremote or the gateway open. Bytes written by
them arrive at ``on_input``; :meth:`write` delivers the board's output. Output can be paced at a
baud rate (10 bit times per byte, 8N1) like a real UART, or unthrottled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import termios
import tty
from typing import Callable

logger = logging.getLogger(__name__)


class PtyBridge:
    """One pty pair; the master side is driven from the asyncio loop.

    Args:
        on_input: called with every chunk written to the pty by its user.
        baud: pace output (and input delivery) at this rate; None: unthrottled.
        name: label for logs.
    """

    MAX_PENDING = 1 << 20

    def __init__(self, on_input: Callable[[bytes], None], *, baud: int | None = None, name: str = "pty") -> None:
        self.on_input = on_input
        self.baud = baud
        self.name = name
        self.master, self._slave = os.openpty()
        # Raw mode: no echo, no CR/LF translation; the board's bytes pass unchanged.
        tty.setraw(self._slave, termios.TCSANOW)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self._out = bytearray()
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._readable)
        self._in = bytearray()
        self._in_wake = asyncio.Event()
        self._writer = self._loop.create_task(self._write_loop(), name=f"pty-writer-{name}")
        self._inputter = self._loop.create_task(self._input_loop(), name=f"pty-input-{name}") if baud else None
        self.closed = False
        self.overrun = 0

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError:
            # EIO: nobody has the slave open right now (we keep our own slave fd, so this is rare).
            return
        if not data:
            return
        if self.baud:
            self._in += data
            self._in_wake.set()
        else:
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        try:
            self.on_input(data)
        except Exception:
            logger.exception("%s: input handler failed", self.name)

    async def _input_loop(self) -> None:
        # Deliver input at the line rate, like bytes arriving on a real UART.
        assert self.baud
        while True:
            await self._in_wake.wait()
            self._in_wake.clear()
            while self._in:
                n = max(1, self.baud // 10 // 200)
                chunk = bytes(self._in[:n])
                del self._in[:n]
                self._deliver(chunk)
                await asyncio.sleep(len(chunk) * 10 / self.baud)

    def write(self, data: bytes) -> None:
        """Queue board output for the pty user."""
        if self.closed or not data:
            return
        self._out += data
        if len(self._out) > self.MAX_PENDING:
            # Nobody reads the port: keep the newest bytes, like a UART FIFO overrunning.
            self.overrun += len(self._out) - self.MAX_PENDING
            del self._out[: len(self._out) - self.MAX_PENDING]
        self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._out:
                if self.baud:
                    # ~5 ms slices at the line rate (10 bits per byte on the wire).
                    n = max(1, self.baud // 10 // 200)
                    chunk = bytes(self._out[:n])
                else:
                    chunk = bytes(self._out[:65536])
                try:
                    written = os.write(self.master, chunk)
                except BlockingIOError:
                    await self._writable()  # nobody reads the port: wait without polling
                    continue
                except OSError as exc:
                    logger.debug("%s: write failed: %s", self.name, exc)
                    written = len(chunk)
                del self._out[:written]
                if self.baud:
                    await asyncio.sleep(written * 10 / self.baud)
                elif self._out:
                    await asyncio.sleep(0)

    async def _writable(self) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        self._loop.add_writer(self.master, ready)
        try:
            await fut
        finally:
            self._loop.remove_writer(self.master)

    async def close(self) -> None:
        """Remove the reader, stop the writer and close both ends."""
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self.master)
        for task in (self._writer, self._inputter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
