"""A serial port given as ``socket://127.0.0.1:PORT`` (QEMU's emulated UART, a TCP serial bridge).

A real asyncio TCP server plays the board: it sends COBS-framed REPORT frames and reads the gateway's ACKs.
The gateway reads the socket through the event loop, writes ACKs without blocking, and reconnects when
the server goes away and comes back, as it reopens a device path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from conftest import KEYS, make_env
from helpers import report_frame

from gateway.config import load_config
from gateway.errors import ConfigError, ProtocolError, TransportError
from gateway.protocol import FRAME_ACK, SerialDeframer, encode_serial, parse_frame, verify_tag
from gateway.service import Gateway
from gateway.storage import ReportQueries
from gateway.transports import SerialTransport
from gateway.transports.serial_link import (
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE_S,
    KEEPALIVE_INTERVAL_S,
    serial_url_problem,
)

pytestmark = pytest.mark.timeout(60)

# This helper's port range (22800-22899), one port per test so parallel workers never collide.
PORT_SERVICE = 22811
PORT_STALL = 22812
PORT_CANCEL = 22813
PORT_KEEPALIVE = 22814
MAX_LAG_S = 0.25  # as tests/gateway/test_serial_link_stalled_reader.py


class SocketBoard:
    """The board at the far end of the socket: the server QEMU would be. ``reading`` False: it reads nothing."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.connections = 0
        self.acks: dict[str, int] = {}
        self.frames: list[bytes | ProtocolError] = []  # every frame the gateway wrote, in order
        self.reading = asyncio.Event()
        self.reading.set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """The server goes away (QEMU exits): listening socket and connections closed."""
        assert self.server is not None
        self.reading.set()  # handlers waiting to read see the close and return
        self.server.close()
        for w in self.writers:
            w.close()
        for w in self.writers:
            try:
                await w.wait_closed()
            except (ConnectionError, OSError):
                pass
        self.writers.clear()
        await self.server.wait_closed()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        deframer = SerialDeframer()
        try:
            while True:
                await self.reading.wait()
                data = await reader.read(4096)
                if not data:
                    return
                for item in deframer.feed(data):
                    self.frames.append(item)
                    if isinstance(item, bytes):
                        frame = parse_frame(item)
                        if frame.type == FRAME_ACK and verify_tag(frame, KEYS[frame.device_id]):
                            self.acks[frame.device_id] = max(self.acks.get(frame.device_id, 0), frame.seq)
        except (ConnectionError, OSError):
            return

    async def wait_connected(self, n: int, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while self.connections < n or not self.writers:
            assert time.monotonic() < end, "the gateway never connected (%d connections)" % self.connections
            await asyncio.sleep(0.02)

    async def deliver(self, device: str, seqs: range, timeout: float = 15.0) -> None:
        """Send the reports and re-send those not acknowledged each second, as the firmware does
        (bytes sent while the gateway's open is still clearing its input are lost, as on a UART)."""
        frames = [report_frame(device, s, KEYS[device]) for s in seqs]
        end = time.monotonic() + timeout
        while self.acks.get(device, 0) < seqs[-1]:
            assert time.monotonic() < end, "no ACK for %s %d: %r" % (device, seqs[-1], self.acks)
            self.writers[-1].write(b"".join(encode_serial(f) for f in frames if parse_frame(f).seq >
                                            self.acks.get(device, 0)))
            await self.writers[-1].drain()
            wait_end = time.monotonic() + 1.0
            while self.acks.get(device, 0) < seqs[-1] and time.monotonic() < wait_end:
                await asyncio.sleep(0.02)


async def max_loop_lag(during: Callable[[], Awaitable[None]]) -> float:
    """The longest the loop was late for a 10 ms tick while ``during`` ran."""
    lag = 0.0
    done = False

    async def ticker() -> None:
        nonlocal lag
        while not done:
            start = time.monotonic()
            await asyncio.sleep(0.01)
            lag = max(lag, time.monotonic() - start - 0.01)

    task = asyncio.create_task(ticker())
    try:
        await during()
    finally:
        done = True
        await task
    return lag


async def test_a_gateway_reads_a_socket_url_port_stores_acks_and_reconnects(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = "socket://127.0.0.1:%d" % PORT_SERVICE
    board = SocketBoard(PORT_SERVICE)
    await board.start()
    cfg = load_config(make_env(tmp_path, serial=(url,)))
    gw = Gateway(cfg)
    caplog.set_level(logging.INFO, logger="gateway.transports.serial_link")
    await gw.start()
    try:
        await board.wait_connected(1)
        lag = await max_loop_lag(lambda: board.deliver("bin-1", range(1, 6)))
        assert lag < MAX_LAG_S, lag
        assert gw.metrics.value("civicedge_link_state", {"link": "serial:%s" % url}) == 1

        # The server goes away (QEMU exits): a disconnect, logged, then retried until it is back.
        await board.stop()
        end = time.monotonic() + 10
        while gw.metrics.value("civicedge_link_state", {"link": "serial:%s" % url}) != 0:
            assert time.monotonic() < end
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)  # several refused connects
        await board.start()
        await board.wait_connected(2)
        await board.deliver("bin-1", range(6, 9))
        await board.deliver("bin-2", range(1, 3))
    finally:
        await gw.stop()
        if board.server is not None:
            await board.stop()
    stored = ReportQueries(cfg.storage.path).reports(device="bin-1")
    assert sorted(r.seq for r in stored) == list(range(1, 9))
    assert [r.seq for r in ReportQueries(cfg.storage.path).reports(device="bin-2")] in ([1, 2], [2, 1])
    corrupt = [f for f in board.frames if not isinstance(f, bytes)]
    assert not corrupt, corrupt  # every ACK arrived whole
    assert all(parse_frame(f).type == FRAME_ACK for f in board.frames if isinstance(f, bytes))
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.transports.serial_link"]
    assert messages.count("opened %s" % url) == 2, messages
    assert "%s went away; reopening" % url in messages, messages
    refused = [m for m in messages if m.startswith("cannot open %s" % url)]
    assert len(refused) == 1, messages  # warned once while it was down, not per retry


async def test_acks_to_a_socket_board_that_stops_reading_never_block_the_loop() -> None:
    """EAGAIN and partial writes on the socket: frames wait in the writer's queue, then arrive whole and
    in order once the board reads again; what does not fit is refused as on a tty."""
    board = SocketBoard(PORT_STALL)
    board.reading.clear()
    await board.start()
    url = "socket://127.0.0.1:%d" % PORT_STALL
    transport = SerialTransport(url, reopen_s=0.1, stall_warn_s=0.2)
    task = asyncio.create_task(transport.run(lambda item, link: None))
    try:
        await board.wait_connected(1)
        while transport._writer is None:  # noqa: SLF001 - opened on the loop once connected
            await asyncio.sleep(0.01)
        sent: list[bytes] = []
        refused = 0

        async def flood() -> None:
            nonlocal refused
            # Until the OS buffers (the server's stream reader stops at 128 KiB) and the 8 KiB queue are full.
            for i in range(200_000):
                if refused >= 20:
                    break
                frame = report_frame("bin-1", i + 1, KEYS["bin-1"])  # any frame: the board checks bytes
                try:
                    await transport.send(frame)
                    sent.append(frame)
                except TransportError as exc:
                    assert exc.reason == "timeout", exc
                    refused += 1
                if i % 50 == 0:
                    await asyncio.sleep(0)

        lag = await max_loop_lag(flood)
        assert lag < MAX_LAG_S, lag
        assert refused > 0 and transport.dropped == refused  # socket buffers and the 8 KiB queue filled
        board.reading.set()
        end = time.monotonic() + 15
        while len(board.frames) < len(sent):
            assert time.monotonic() < end, (len(board.frames), len(sent))
            await asyncio.sleep(0.05)
        assert board.frames == sent  # whole, in order, none cut by a partial write
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await board.stop()


async def test_close_of_a_socket_port_does_not_block_the_loop() -> None:
    board = SocketBoard(PORT_CANCEL)
    await board.start()
    transport = SerialTransport("socket://127.0.0.1:%d" % PORT_CANCEL, reopen_s=0.1)
    task = asyncio.create_task(transport.run(lambda item, link: None))
    try:
        await board.wait_connected(1)

        async def stop() -> None:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        assert await max_loop_lag(stop) < MAX_LAG_S  # pyserial's close sleeps 0.3 s: in a thread
        end = time.monotonic() + 5
        while board.writers and not board.writers[0].transport.is_closing():
            await asyncio.sleep(0.02)
            if time.monotonic() > end:
                break
        with pytest.raises(TransportError) as info:
            await transport.send(b"x")
        assert info.value.reason == "disconnected"
    finally:
        await board.stop()


async def test_a_socket_port_has_tcp_keepalive_so_a_vanished_peer_is_a_disconnect() -> None:
    board = SocketBoard(PORT_KEEPALIVE)
    await board.start()
    transport = SerialTransport("socket://127.0.0.1:%d" % PORT_KEEPALIVE, reopen_s=0.1)
    task = asyncio.create_task(transport.run(lambda item, link: None))
    try:
        await board.wait_connected(1)
        while transport._ser is None:  # noqa: SLF001
            await asyncio.sleep(0.01)
        with socket.socket(fileno=os.dup(transport._ser.fileno())) as sock:  # noqa: SLF001
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
            count = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
            # unanswered data in flight (keepalive waits while any is unacknowledged): the same 25 s
            user_timeout_ms = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        assert (idle, interval, count) == (KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
        assert user_timeout_ms == (idle + interval * count) * 1000
        assert idle + interval * count <= 30
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await board.stop()


@pytest.mark.parametrize(("port", "problem"), [
    ("/dev/ttyUSB0", None),
    ("socket://127.0.0.1:5555", None),
    ("socket://qemu-host:5555/", None),
    ("rfc2217://rig:4000", "'rfc2217://rig:4000': the gateway reads device paths (/dev/ttyUSB0) and "
                           "socket://HOST:PORT URLs only, not rfc2217://"),
    ("loop://", "'loop://': the gateway reads device paths (/dev/ttyUSB0) and socket://HOST:PORT URLs only, "
                "not loop://"),
    ("socket://127.0.0.1", "'socket://127.0.0.1': expected socket://HOST:PORT with a port 1-65535 and nothing "
                           "after it"),
    ("socket://127.0.0.1:0", "'socket://127.0.0.1:0': expected socket://HOST:PORT with a port 1-65535 and "
                             "nothing after it"),
    ("socket://127.0.0.1:99999", "'socket://127.0.0.1:99999': expected socket://HOST:PORT with a port 1-65535 "
                                 "and nothing after it"),
    ("socket://127.0.0.1:5555?logging=debug", "'socket://127.0.0.1:5555?logging=debug': expected "
                                              "socket://HOST:PORT with a port 1-65535 and nothing after it"),
    ("socket://:5555", "'socket://:5555': expected socket://HOST:PORT with a port 1-65535 and nothing after it"),
    # review 3: accepted, then the secret named the link in logs, metrics and /healthz
    ("socket://user:secret@bridge:5555", "a socket:// port takes no user or password (a raw TCP port has no "
                                         "login): socket://HOST:PORT"),
])
def test_which_port_strings_the_transport_reads(port: str, problem: str | None) -> None:
    assert serial_url_problem(port) == problem
    if problem is not None:
        with pytest.raises(TransportError) as info:
            SerialTransport(port)
        assert info.value.reason == "open_failed" and str(info.value) == problem


def test_the_config_refuses_a_url_the_gateway_cannot_read_and_accepts_socket(tmp_path: Path) -> None:
    path = make_env(tmp_path, serial=("rfc2217://rig:4000",))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.reason == "bad_value" and info.value.key == "serial[0].port"
    assert str(info.value).endswith(": serial[0].port 'rfc2217://rig:4000': the gateway reads device paths "
                                    "(/dev/ttyUSB0) and socket://HOST:PORT URLs only, not rfc2217://"), info.value
    path.write_text(path.read_text().replace("rfc2217://rig:4000", "socket://127.0.0.1:5555"))
    assert [p.port for p in load_config(path).serial] == ["socket://127.0.0.1:5555"]


async def test_a_server_that_resets_each_connection_at_once_is_a_disconnect_never_a_crash(
        caplog: pytest.LogCaptureFixture) -> None:
    """Review 3: the delimiter written at each open raised ConnectionResetError out of run() (the link
    supervisor logged 'ended unexpectedly' and backed off) when the peer reset right after accepting."""
    import struct
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(50)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    transport = SerialTransport("socket://127.0.0.1:%d" % srv.getsockname()[1], reopen_s=0.01)
    task = asyncio.create_task(transport.run(lambda item, link: None))
    try:
        end = time.monotonic() + 20
        while transport.opens < 30 and time.monotonic() < end:
            assert not task.done(), "run() ended: %r" % (task.exception(),)
            await asyncio.sleep(0.02)
        assert not task.done(), "run() ended: %r" % (task.exception(),)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await transport.close()
        stop.set()
        thread.join(5)
        srv.close()


async def test_socket_ports_that_cannot_connect_leave_the_default_executor_free() -> None:
    """Review 3: six socket ports to a host that does not answer (pyserial connects for up to 5 s) held the
    loop's default executor, so asyncio.to_thread (admin API, store check, route solver) waited seconds."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fill = []
    for _ in range(3):  # fill the accept queue: later SYNs are dropped, as by a host that does not answer
        client = socket.socket()
        client.settimeout(0.3)
        try:
            client.connect(("127.0.0.1", port))
        except OSError:
            pass
        fill.append(client)
    transports = [SerialTransport("socket://127.0.0.1:%d" % port, reopen_s=0.5) for _ in range(6)]
    tasks = [asyncio.create_task(t.run(lambda item, link: None)) for t in transports]
    try:
        await asyncio.sleep(1.0)
        worst = 0.0
        for _ in range(5):
            start = time.monotonic()
            await asyncio.to_thread(lambda: None)
            worst = max(worst, time.monotonic() - start)
            await asyncio.sleep(0.2)
        assert worst < 1.0, "the default executor waited %.2f s behind socket connects" % worst
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in transports:
            await t.close()
        for client in fill:
            client.close()
        srv.close()
