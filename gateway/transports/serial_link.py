"""Serial transport: one pyserial port per board, read by the event loop, reopened when it returns."""

from __future__ import annotations

import asyncio
import logging
import os

import serial

from gateway.errors import TransportError
from gateway.metrics import GatewayMetrics
from gateway.pipeline.ingest import Link
from gateway.protocol.serial_codec import SerialDeframer, encode_serial
from gateway.transports.base import FrameSink

log = logging.getLogger(__name__)


class SerialTransport:
    """Reads COBS/0x00-delimited frames from one serial port and writes ACKs back.

    The port is opened with pyserial (termios raw mode, baud rate) and then read without threads
    through the event loop's reader on its file descriptor. When the port disappears (USB unplug,
    simulator restart), it is reopened every ``reopen_s`` seconds until it returns.

    Args:
        port: device path (``/dev/ttyUSB0``, a pty path).
        baud: baud rate.
        metrics: link state gauge ``serial:<port>``.
        reopen_s: delay between reopen attempts.
        write_timeout_s: how long an ACK write may block on a stalled port.
        flow: while this event is clear (the ingest backlog is full), the port is not read: the
            OS buffer and then the device hold the data (backpressure instead of memory growth).
    """

    def __init__(self, port: str, *, baud: int = 115200, metrics: GatewayMetrics | None = None,
                 reopen_s: float = 0.5, write_timeout_s: float = 1.0, flow: asyncio.Event | None = None) -> None:
        self.port = port
        self.baud = baud
        self.name = "serial:%s" % port
        self._metrics = metrics
        self._reopen_s = reopen_s
        self._write_timeout_s = write_timeout_s
        self._ser: serial.Serial | None = None
        self._deframer = SerialDeframer()
        self._flow = flow
        self.opens = 0
        self.pauses = 0

    def _set_state(self, up: bool) -> None:
        if self._metrics is not None:
            self._metrics.set_link(self.name, up)

    async def send(self, frame: bytes) -> None:
        """Write one frame (COBS + delimiter) to the port.

        Raises:
            TransportError: ``disconnected`` if the port is closed, ``timeout`` if the write stalls.
        """
        ser = self._ser
        if ser is None:
            raise TransportError("%s is not open" % self.port, reason="disconnected", link=self.name)
        try:
            ser.write(encode_serial(frame))
        except serial.SerialTimeoutException as exc:
            raise TransportError("write to %s timed out" % self.port, reason="timeout", link=self.name) from exc
        except (serial.SerialException, OSError) as exc:
            raise TransportError("write to %s failed: %s" % (self.port, exc), reason="disconnected",
                                 link=self.name) from exc

    async def run(self, sink: FrameSink) -> None:
        """Read frames until cancelled, reopening the port whenever it goes away."""
        link = Link(name=self.name, kind="serial", send=self.send)
        self._set_state(False)
        warned = False
        while True:
            try:
                # exclusive: a second gateway on the same port would steal half the frames
                ser = serial.Serial(self.port, self.baud, timeout=0, write_timeout=self._write_timeout_s,
                                    exclusive=True)
            except (serial.SerialException, OSError) as exc:
                if not warned:
                    log.warning("cannot open %s (%s); retrying every %.1f s", self.port, exc, self._reopen_s)
                    warned = True
                await asyncio.sleep(self._reopen_s)
                continue
            warned = False
            self.opens += 1
            self._ser = ser
            self._deframer.reset()
            self._set_state(True)
            log.info("opened %s at %d baud", self.port, self.baud)
            try:
                await self._read_until_closed(ser, sink, link)
            finally:
                self._ser = None
                self._set_state(False)
                try:
                    ser.close()
                except (serial.SerialException, OSError):
                    pass
            log.warning("%s went away; reopening", self.port)
            await asyncio.sleep(self._reopen_s)

    async def _read_until_closed(self, ser: serial.Serial, sink: FrameSink, link: Link) -> None:
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        fd = ser.fileno()

        def on_readable() -> None:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return
            except OSError as exc:  # EIO when the other end of a pty closes, ENXIO on unplug
                log.debug("read from %s failed: %s", self.port, exc)
                data = b""
            if not data:
                loop.remove_reader(fd)
                if not closed.done():
                    closed.set_result(None)
                return
            for item in self._deframer.feed(data):
                sink(item, link)
            if flow is not None and not flow.is_set() and not closed.done():
                loop.remove_reader(fd)  # backlog full: leave the bytes in the OS buffer for now
                self.pauses += 1
                resumer.append(loop.create_task(resume()))

        async def resume() -> None:
            assert flow is not None
            await flow.wait()
            resumer.clear()
            if not closed.done():
                loop.add_reader(fd, on_readable)

        flow = self._flow
        resumer: list[asyncio.Task[None]] = []
        loop.add_reader(fd, on_readable)
        try:
            await closed
        finally:
            loop.remove_reader(fd)
            for task in resumer:
                task.cancel()

    async def close(self) -> None:
        """Close the port if open."""
        ser, self._ser = self._ser, None
        if ser is not None:
            try:
                ser.close()
            except (serial.SerialException, OSError):
                pass
