"""Serial transport: one pyserial port per board, read and written by the event loop without blocking it,
reopened when it returns. A port is a device path or a ``socket://HOST:PORT`` URL (a TCP serial bridge,
QEMU's emulated UART)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import socket
import termios
import time
from urllib.parse import urlsplit

import serial

from gateway.errors import TransportError
from gateway.metrics import GatewayMetrics
from gateway.pipeline.ingest import Link
from gateway.protocol.serial_codec import SerialDeframer, encode_serial
from gateway.transports.base import FrameSink
from gateway.transports.serial_writer import MAX_QUEUED_BYTES, STALL_WARN_S, FrameWriter

log = logging.getLogger(__name__)

# At a close, output still unsent after this long is discarded rather than waited for: the last ACKs
# of a stop reach a board that reads, and a board that does not read never holds the close up.
DRAIN_ON_CLOSE_S = 0.2
# pyserial URL schemes whose port is a plain byte stream on one descriptor the loop can read and write.
# rfc2217:// (telnet escaping on the wire) and loop:// (no descriptor) are not.
URL_SCHEMES = ("socket",)
# A socket port whose peer vanishes without closing (a TCP serial bridge's host loses power) is declared
# gone after about KEEPALIVE_IDLE_S + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL_S (25 s) of unanswered probes,
# then reconnected; without them the link would stay "up" and silent for hours.
KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3
USER_TIMEOUT_MS = (KEEPALIVE_IDLE_S + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL_S) * 1000


def serial_url_problem(port: str) -> str | None:
    """None when ``port`` is a device path or a URL the transport reads; otherwise why not (one line).

    Only ``socket://HOST:PORT`` (no query: pyserial's ``?logging=`` would log through the root logger).
    """
    if "://" not in port:
        return None
    parts = urlsplit(port)
    if parts.scheme not in URL_SCHEMES:
        return ("%r: the gateway reads device paths (/dev/ttyUSB0) and socket://HOST:PORT URLs only, not %s://"
                % (port, parts.scheme or "''"))
    try:
        number = parts.port
    except ValueError:
        number = None
    if parts.username is not None or parts.password is not None:
        # pyserial would drop them silently, and the port string names the link in logs and metrics
        return "a socket:// port takes no user or password (a raw TCP port has no login): socket://HOST:PORT"
    if not parts.hostname or not number or parts.path not in ("", "/") or parts.query or parts.fragment:
        return "%r: expected socket://HOST:PORT with a port 1-65535 and nothing after it" % port
    return None


class SerialTransport:
    """Reads COBS/0x00-delimited frames from one serial port and writes ACKs back.

    The port is opened with pyserial (termios raw mode, baud rate) and then read without threads
    through the event loop's reader on its file descriptor. When the port disappears (USB unplug,
    simulator restart), it is reopened every ``reopen_s`` seconds until it returns.

    A ``socket://HOST:PORT`` port is opened with ``serial.serial_for_url`` in a worker thread (pyserial
    connects blocking, up to 5 s) and read and written the same way through the socket's descriptor;
    no termios call touches it. The server closing or resetting the connection is a disconnect, and the
    port is reconnected like a device path is reopened; TCP keepalive declares a peer that vanished
    without closing gone after about 25 s.

    ACKs are written without blocking (:class:`FrameWriter`): a board that stops reading fills the OS
    buffer, then a bounded queue; ACKs that do not fit are dropped (the board re-sends, and an ACK's
    floor is cumulative) and a WARNING says so, rate-limited. The port is not reopened for it: that
    would not make the board read, and its reports still arrive.

    Args:
        port: device path (``/dev/ttyUSB0``, a pty path) or ``socket://HOST:PORT``.
        baud: baud rate.
        metrics: link state gauge ``serial:<port>``.
        reopen_s: delay between reopen attempts.
        max_queued_bytes: encoded frames kept while the port's OS buffer is full.
        stall_warn_s: the WARNING once the board has read nothing for this long while ACKs wait.
        flow: while this event is clear (the ingest backlog is full), the port is not read: the
            OS buffer and then the device hold the data (backpressure instead of memory growth).

    Raises:
        TransportError: ``open_failed`` for a URL it cannot read (:func:`serial_url_problem`).
    """

    def __init__(self, port: str, *, baud: int = 115200, metrics: GatewayMetrics | None = None,
                 reopen_s: float = 0.5, flow: asyncio.Event | None = None, max_queued_bytes: int = MAX_QUEUED_BYTES,
                 stall_warn_s: float = STALL_WARN_S) -> None:
        problem = serial_url_problem(port)
        if problem is not None:
            raise TransportError(problem, reason="open_failed", link="serial:%s" % port)
        self.port = port
        self.baud = baud
        self.name = "serial:%s" % port
        self._is_url = "://" in port
        # A socket port connects and closes in a thread of its own, never in the loop's default executor:
        # a bridge that does not answer holds a thread ~90 % of the time (pyserial connects for up to 5 s),
        # and the admin API, the store check and the route solver share the default one.
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._metrics = metrics
        self._reopen_s = reopen_s
        self._max_queued_bytes = max_queued_bytes
        self._stall_warn_s = stall_warn_s
        self._ser: serial.SerialBase | None = None
        self._writer: FrameWriter | None = None
        self._closed: asyncio.Future[None] | None = None  # resolved when the open port went away
        self._deframer = SerialDeframer()
        self._flow = flow
        self.opens = 0
        self.pauses = 0
        self.dropped = 0  # ACKs refused because the board was not reading

    def _set_state(self, up: bool) -> None:
        if self._metrics is not None:
            self._metrics.set_link(self.name, up)

    async def send(self, frame: bytes) -> None:
        """Write one frame (COBS + delimiter) to the port, or queue it; never blocks (:meth:`send_now`).

        Raises:
            TransportError: as :meth:`send_now`.
        """
        self.send_now(frame)

    def send_now(self, frame: bytes) -> None:
        """Write one frame (COBS + delimiter) to the port, or queue it, without waiting (the link's
        ``send_nowait``: ingest sends its ACKs through it inline).

        Raises:
            TransportError: ``disconnected`` if the port is closed or failed, ``timeout`` if the board
                has stopped reading and the frame does not fit in the queue (it is dropped whole).
        """
        writer = self._writer
        if writer is None:
            raise TransportError("%s is not open" % self.port, reason="disconnected", link=self.name)
        try:
            taken = writer.write(encode_serial(frame))
        except OSError as exc:
            self._port_failed(exc)
            raise TransportError("write to %s failed: %s" % (self.port, exc), reason="disconnected",
                                 link=self.name) from exc
        if not taken:
            self.dropped += 1
            raise TransportError("%s is not reading: %d bytes already wait, frame dropped"
                                 % (self.port, writer.queued_bytes), reason="timeout", link=self.name)

    def _port_failed(self, exc: OSError) -> None:
        """A write failed: end this open of the port (the run loop reopens it)."""
        closed = self._closed
        if closed is not None and not closed.done():
            log.debug("write to %s failed: %s", self.port, exc)
            closed.set_result(None)

    async def run(self, sink: FrameSink) -> None:
        """Read frames until cancelled, reopening the port whenever it goes away."""
        link = Link(name=self.name, kind="serial", send=self.send, send_nowait=self.send_now)
        self._set_state(False)
        warned = False
        while True:
            try:
                ser = await self._open()
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
            if self._is_url:
                log.info("opened %s", self.port)  # no baud rate on a socket
            else:
                log.info("opened %s at %d baud", self.port, self.baud)
            try:
                await self._read_until_closed(ser, sink, link)
            finally:
                self._ser = None
                self._set_state(False)
                await self._release(ser)
            log.warning("%s went away; reopening", self.port)
            await asyncio.sleep(self._reopen_s)

    async def _open(self) -> serial.SerialBase:
        """Open the port: a device path on the loop, as always; a URL in a worker thread."""
        if not self._is_url:
            # exclusive: a second gateway on the same port would steal half the frames
            return serial.Serial(self.port, self.baud, timeout=0, write_timeout=0, exclusive=True)
        loop = asyncio.get_running_loop()
        executor = self._url_executor()
        opening = loop.run_in_executor(executor, functools.partial(_open_url, self.port, self.baud))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            # Cancelled while connecting: close the connection the thread may still make.
            opening.add_done_callback(lambda f: None if f.cancelled() or f.exception() is not None
                                      else _close_in_thread(loop, executor, f.result()))
            raise

    def _url_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """This socket port's own thread for connecting and closing (made again after :meth:`close`)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="serial-%s" % self.port.rpartition("/")[2])
        return self._executor

    async def _read_until_closed(self, ser: serial.SerialBase, sink: FrameSink, link: Link) -> None:
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        fd = ser.fileno()
        os.set_blocking(fd, False)  # pyserial opens a tty and a socket so; every write relies on it
        self._closed = closed
        self._writer = FrameWriter(loop, fd, name=self.name, on_error=self._port_failed,
                                   max_queued_bytes=self._max_queued_bytes, stall_warn_s=self._stall_warn_s)
        # The last close may have cut a frame (its rest forgotten or flushed), leaving the board half of it:
        # a delimiter first ends that there, so this open's first ACK is not read as its tail (the board's
        # deframer, as ours, skips an empty chunk).
        try:
            self._writer.write(b"\x00")
        except OSError as exc:  # the port failed already (a socket reset right after connecting, EIO)
            self._port_failed(exc)  # a disconnect like any other: reopened by the run loop

        def on_readable() -> None:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return
            except OSError as exc:  # EIO when the other end of a pty closes, ENXIO on unplug, ECONNRESET, ETIMEDOUT
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

    async def _release(self, ser: serial.SerialBase) -> None:
        """Close ``ser`` after at most :data:`DRAIN_ON_CLOSE_S` of draining what is unsent."""
        writer, self._writer = self._writer, None  # no new frames (send says disconnected)
        self._closed = None
        try:
            end = time.monotonic() + DRAIN_ON_CLOSE_S
            while time.monotonic() < end and _unsent(ser, writer, os_buffer=not self._is_url):
                await asyncio.sleep(0.01)
        finally:
            if writer is not None:
                writer.close()
            if self._is_url:
                # A socket's close never waits for the peer (the kernel sends what it holds); pyserial's
                # sleeps 0.3 s after it, so off the loop.
                await asyncio.get_running_loop().run_in_executor(self._url_executor(), _close_quietly, ser)
                return
            try:
                # A UART driver's close waits (up to its closing_wait, 30 s on many) for output that
                # a board which stopped reading never takes: discard it first.
                termios.tcflush(ser.fileno(), termios.TCOFLUSH)
            except (termios.error, serial.SerialException, OSError, ValueError):
                pass
            try:
                ser.close()
            except (serial.SerialException, OSError):
                pass

    async def close(self) -> None:
        """Close the port if open; waits at most :data:`DRAIN_ON_CLOSE_S` for unsent output."""
        ser, self._ser = self._ser, None
        if ser is not None:
            await self._release(ser)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)  # a connect still running ends by itself (within 5 s)


def _open_url(url: str, baud: int) -> serial.SerialBase:
    """Connect a ``socket://`` port (blocking: runs in a worker thread) and turn TCP keepalive on."""
    ser = serial.serial_for_url(url, baud, timeout=0, write_timeout=0)
    try:
        # A second socket object on a duplicate descriptor: the options belong to the connection.
        with socket.socket(fileno=os.dup(ser.fileno())) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; elsewhere the system's keepalive timers apply
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
            if hasattr(socket, "TCP_USER_TIMEOUT"):
                # Keepalive probes are sent only while nothing is unacknowledged: a peer that vanished
                # with an ACK in flight would be retransmitted to for ~15 min. Same bound for that case.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
    except OSError:
        _close_quietly(ser)
        raise
    return ser


def _close_quietly(ser: serial.SerialBase) -> None:
    try:
        ser.close()
    except (serial.SerialException, OSError):
        pass


def _close_in_thread(loop: asyncio.AbstractEventLoop, executor: concurrent.futures.Executor,
                     ser: serial.SerialBase) -> None:
    try:
        loop.run_in_executor(executor, _close_quietly, ser)
    except RuntimeError:  # the loop or the executor is shutting down: close here
        _close_quietly(ser)


def _unsent(ser: serial.SerialBase, writer: FrameWriter | None, *, os_buffer: bool = True) -> bool:
    """Whether output waits, in the writer's queue or (``os_buffer``: a tty) the port's OS buffer."""
    if writer is not None and writer.queued_bytes:
        return True
    if not os_buffer:
        return False
    try:
        return bool(ser.out_waiting)
    except (serial.SerialException, OSError, ValueError):  # the port went away: nothing will drain
        return False
