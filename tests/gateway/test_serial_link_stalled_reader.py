"""A board that stops reading its serial port: the gateway's event loop never waits for it.

Real ptys opened by the real SerialTransport (pyserial); the test holds the board's end and reads it,
or does not.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import tty
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from gateway.errors import ProtocolError, TransportError
from gateway.protocol import encode_serial
from gateway.protocol.serial_codec import SerialDeframer
from gateway.transports import SerialTransport
from gateway.transports.serial_writer import FrameWriter

# The old blocking write held the loop 1 s per ACK; a quarter of that leaves room for a loaded CI machine
# descheduling the process (1,000 sends take a few ms of CPU).
MAX_LAG_S = 0.25


@dataclass
class Board:
    """The board's end of the pty: it reads (through the loop) only while ``reading`` is set."""

    master: int
    transport: SerialTransport
    task: asyncio.Task[None]
    got: list[bytes | ProtocolError] = field(default_factory=list)
    deframer: SerialDeframer = field(default_factory=SerialDeframer)
    last_byte_at: float = 0.0

    def start_reading(self) -> None:
        asyncio.get_running_loop().add_reader(self.master, self._on_readable)

    def stop_reading(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except (BlockingIOError, OSError):
            return
        self.last_byte_at = time.monotonic()
        self.got.extend(self.deframer.feed(data))

    async def read_until_quiet(self, quiet_s: float = 0.3, limit_s: float = 10.0) -> None:
        self.start_reading()
        end = time.monotonic() + limit_s
        self.last_byte_at = time.monotonic()
        while time.monotonic() - self.last_byte_at < quiet_s:
            assert time.monotonic() < end, "the board's end never went quiet"
            await asyncio.sleep(0.02)


@pytest.fixture
async def board() -> AsyncIterator[Board]:
    master, slave = os.openpty()
    tty.setraw(master)
    os.set_blocking(master, False)
    transport = SerialTransport(os.ttyname(slave), reopen_s=0.1, stall_warn_s=0.2)
    task = asyncio.create_task(transport.run(lambda item, link: None))
    b = Board(master, transport, task)
    try:
        end = time.monotonic() + 5
        while transport.opens == 0:
            assert time.monotonic() < end
            await asyncio.sleep(0.01)
        yield b
    finally:
        asyncio.get_running_loop().remove_reader(b.master)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await transport.close()
        os.close(b.master)  # the test may have replaced it
        os.close(slave)


class Ticker:
    """Measures the event loop's lag: how late a 5 ms sleep wakes."""

    def __init__(self) -> None:
        self.max_lag = 0.0
        self.ticks = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.005)
            self.max_lag = max(self.max_lag, loop.time() - start - 0.005)
            self.ticks += 1

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def _send_all(transport: SerialTransport, frames: list[bytes]) -> tuple[list[bytes], list[str]]:
    """Send every frame as the ingest sends ACKs; return the frames taken and the failures' reasons."""
    taken: list[bytes] = []
    reasons: list[str] = []
    for frame in frames:
        try:
            await transport.send(frame)
            taken.append(frame)
        except TransportError as exc:
            reasons.append(exc.reason)
        await asyncio.sleep(0)
    return taken, reasons


async def test_a_board_that_stops_reading_never_delays_the_loop_and_frames_stay_whole(board: Board) -> None:
    rng = random.Random(7)
    # ACK-sized frames and some longer ones, with zero bytes in them (COBS has work to do): a partial
    # write of any of them must never reach the board as a cut frame
    frames = [bytes(rng.choice((0, 1, 255, rng.randrange(256))) for _ in range(rng.choice((48, 61, 200, 333))))
              for _ in range(1000)]
    ticker = Ticker()
    started = time.monotonic()
    taken, reasons = await _send_all(board.transport, frames)
    took = time.monotonic() - started
    await ticker.stop()
    assert ticker.ticks > 0 and ticker.max_lag < MAX_LAG_S, (ticker.max_lag, took)
    # the pty's buffer and then the bounded queue filled: the rest were refused as a stalled write
    assert reasons and set(reasons) == {"timeout"} and board.transport.dropped == len(reasons)
    assert len(taken) + len(reasons) == len(frames)

    await board.read_until_quiet()
    assert all(isinstance(item, bytes) for item in board.got), [i for i in board.got if not isinstance(i, bytes)][:3]
    assert board.got == taken  # every frame taken arrives whole, once, in order

    # once it reads again, frames go out at once and nothing is dropped
    more = [b"after-%d" % i for i in range(50)]
    taken2, reasons2 = await _send_all(board.transport, more)
    assert not reasons2 and taken2 == more
    await board.read_until_quiet(quiet_s=0.2)
    assert board.got[len(taken):] == more


async def test_the_stall_is_warned_once_per_period_and_its_end_is_told(board: Board,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.transports.serial_writer")
    frame = bytes(range(1, 61))
    taken, reasons = await _send_all(board.transport, [frame] * 2000)  # fills the pty and the queue
    assert reasons
    await asyncio.sleep(0.3)  # stall_warn_s = 0.2
    for _ in range(3):
        await _send_all(board.transport, [frame] * 100)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert board.transport.name in warnings[0] and "has not read for" in warnings[0]
    await board.read_until_quiet()
    assert len(board.got) == len(taken)
    assert any("reads again" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


async def test_nothing_blocks_on_close_with_output_unsent(board: Board) -> None:
    """As the gateway stops: the link task is cancelled, then the transport closed."""
    await _send_all(board.transport, [bytes(range(1, 61))] * 2000)
    assert board.transport._writer is not None and board.transport._writer.queued_bytes > 0
    ticker = Ticker()
    started = time.monotonic()
    board.task.cancel()
    await asyncio.gather(board.task, return_exceptions=True)
    await board.transport.close()
    took = time.monotonic() - started
    await ticker.stop()
    assert took < 1.0 and ticker.max_lag < MAX_LAG_S, (took, ticker.max_lag)
    with pytest.raises(TransportError) as info:
        await board.transport.send(b"late")
    assert info.value.reason == "disconnected"


async def test_a_board_gone_is_a_disconnect_not_a_timeout(board: Board) -> None:
    os.close(board.master)
    master2, slave2 = os.openpty()  # the closed number may be reused: keep it busy with something harmless
    try:
        with pytest.raises(TransportError) as info:
            await board.transport.send(b"ack")
        assert info.value.reason == "disconnected"
    finally:
        board.master = master2
        os.close(slave2)


async def test_a_partial_write_is_finished_before_the_next_frame() -> None:
    """The writer on its own, over a socket pair with a small buffer: frames larger than what the OS
    takes at once arrive whole and in order."""
    import socket

    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.setblocking(False)
    theirs.setblocking(False)
    errors: list[OSError] = []
    writer = FrameWriter(loop, ours.fileno(), name="test", on_error=errors.append, max_queued_bytes=64 * 1024)
    frames = [bytes([i % 255 + 1]) * (300 + 17 * i) for i in range(40)]  # up to 963 (MAX_FRAME 1024)
    try:
        assert all(writer.write(encode_serial(f)) for f in frames)
        assert writer.queued_bytes > 0  # the OS took only part: the rest waits (a cut frame among it)
        end = time.monotonic() + 10
        deframer = SerialDeframer()
        got: list[bytes | ProtocolError] = []
        while len(got) < len(frames):
            assert time.monotonic() < end
            await asyncio.sleep(0.01)
            try:
                chunk = theirs.recv(1000)  # slowly: partial writes keep happening
            except BlockingIOError:
                continue
            got.extend(deframer.feed(chunk))
        assert got == frames and not errors and writer.queued_bytes == 0
    finally:
        writer.close()
        ours.close()
        theirs.close()


def test_the_stall_warning_waits_for_stall_warn_s_and_repeats_once_per_period(
        caplog: pytest.LogCaptureFixture) -> None:
    """The writer on its own, on a clock of the test's: a socket nobody reads."""
    import socket

    from gateway.transports.serial_writer import STALL_LOG_EVERY_S

    caplog.set_level(logging.INFO, logger="gateway.transports.serial_writer")
    loop = asyncio.new_event_loop()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    now = [1000.0]
    writer = FrameWriter(loop, ours.fileno(), name="serial:test", on_error=lambda exc: None, max_queued_bytes=256,
                         stall_warn_s=10.0, clock=lambda: now[0])

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    try:
        frame = encode_serial(bytes(range(1, 100)))
        while writer.write(frame):  # the socket's buffer, then the queue
            pass
        assert writer.dropped == 1 and not warnings()
        now[0] += 9.9
        assert not writer.write(frame) and not warnings()  # refused, but not stalled for 10 s yet
        now[0] += 0.2
        assert not writer.write(frame)
        assert len(warnings()) == 1 and "serial:test has not read for 10 s" in warnings()[0]
        now[0] += STALL_LOG_EVERY_S - 1
        assert not writer.write(frame) and len(warnings()) == 1
        now[0] += 1.5
        assert not writer.write(frame) and len(warnings()) == 2
        assert "(5 since it stopped reading)" in warnings()[1]
    finally:
        writer.close()
        ours.close()
        theirs.close()
        loop.close()


def test_the_reads_again_line_counts_the_drops_of_its_own_stall(caplog: pytest.LogCaptureFixture) -> None:
    """Review 2: the INFO line gave the lifetime total of dropped ACKs, not this stall's."""
    import socket

    caplog.set_level(logging.INFO, logger="gateway.transports.serial_writer")
    loop = asyncio.new_event_loop()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    now = [1000.0]
    writer = FrameWriter(loop, ours.fileno(), name="serial:test", on_error=lambda exc: None, max_queued_bytes=256,
                         stall_warn_s=10.0, clock=lambda: now[0])

    def drain() -> None:
        while True:
            try:
                if not theirs.recv(65536):
                    break
            except BlockingIOError:
                break

    def stall(drops: int) -> str:
        frame = encode_serial(bytes(range(1, 100)))
        while writer.write(frame):
            pass
        now[0] += 11
        for _ in range(drops - 1):
            writer.write(frame)
        drain()
        while writer.queued_bytes:
            writer._on_writable()  # noqa: SLF001 - what the loop calls once the socket is writable
            drain()
        infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "reads again" in r.getMessage()]
        return infos[-1]

    try:
        assert "6 ACKs were dropped" in stall(6)
        assert "4 ACKs were dropped" in stall(4)
        assert writer.dropped == 10
    finally:
        writer.close()
        ours.close()
        theirs.close()
        loop.close()


async def test_an_open_starts_with_a_delimiter_so_a_frame_cut_at_the_last_close_ends_there(board: Board) -> None:
    """Review 2: a close forgets the rest of a frame partly written (or flushes it), leaving the board half a
    frame with no delimiter; the next open's first ACK was read as its tail and lost."""
    cut = encode_serial(bytes(range(1, 60)))[:19]  # what the board holds of the frame the last close cut
    deframer = SerialDeframer()
    assert list(deframer.feed(cut)) == []
    frame = bytes(range(100, 140))
    await board.transport.send(frame)
    await asyncio.sleep(0.1)
    data = os.read(board.master, 4096)  # this open's bytes: the delimiter, then the ACK
    assert data.startswith(b"\x00")
    got = list(deframer.feed(data))
    assert got[-1] == frame  # whole; the cut chunk alone is the error
    assert len(got) == 2 and isinstance(got[0], ProtocolError)
