"""``--hil-data-port socket://HOST:PORT``: the serial backend's data UART behind a raw TCP serial bridge
(ser2net without RFC 2217): checked like the gateway checks it, leased like a local port, read by
``hil_gateway`` through the gateway's own ``socket://`` transport.

The end-to-end test puts a real TCP bridge (a thread here, as ser2net would) in front of a virtual
board's data-UART pty; the board, the plugin's serial backend and the gateway are the real ones.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import tty
from pathlib import Path
from typing import Any, Iterator

import pytest

from hil.backends.board import BoardHandle, make_identity
from hil.backends.errors import BackendError
from hil.backends.serial.driver import SerialDriver, lease_name, parse_data_port, same_port
from hil.backends.serial.lease import Lease, LeaseHeldError
from hil.backends.serial.select import PortInfo
from hil.boards import load_board

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(240)

DRIVER_PORT = 51511  # only named in URLs of leases, never bound or connected to

BOARD_START_S = 120.0
"""Limit for the virtual board to boot (its first boot compiles MicroPython's frozen modules: slow on a busy host)."""
BOARD_STOP_S = 60.0
INNER_RUN_S = 220.0
"""Limit for the inner pytest run: its board sync and start, and the gateway's 150 s wait for two reports."""
END_TO_END_S = BOARD_START_S + INNER_RUN_S + BOARD_STOP_S + 20.0
"""The end-to-end test's own pytest-timeout (setup and teardown count): each step's limit fires first, naming it."""

log = logging.getLogger(__name__)


class TcpSerialBridge:
    """A raw TCP serial bridge (ser2net's ``raw`` mode) on a free loopback port: one client at a time, bytes
    copied both ways between it and a serial device (here a pty), counted.

    A connection that fails (the client resets it, the device is gone) is logged and ends; the bridge waits for
    the next client, as ser2net does. Anything else stops the bridge and is kept as :attr:`failure`, which the
    test checks: a dead bridge thread must not pass for a gateway that reads nothing.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.listener = socket.create_server(("127.0.0.1", 0))  # a port the kernel knows to be free
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.to_client = 0
        self.to_device = 0
        self.connections = 0
        self.dropped: list[str] = []
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-serial-bridge", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    continue
                self.connections += 1
                try:
                    self._serve(conn)
                except OSError as exc:  # ConnectionResetError, BrokenPipeError, a write that timed out
                    log.warning("tcp-serial-bridge: connection %d ended: %r", self.connections, exc)
                    self.dropped.append(repr(exc))
        except BaseException as exc:  # kept for the test to fail on, with the cause
            log.exception("tcp-serial-bridge stopped")
            self.failure = exc

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)  # sendall to a client that stopped reading fails, not hangs
        fd = os.open(self.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(fd)
            with conn:
                self._pump(conn, fd)
        finally:
            os.close(fd)

    def _pump(self, conn: socket.socket, fd: int) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([conn, fd], [], [], 0.2)
            if conn in readable:
                data = conn.recv(4096)
                if not data:
                    return  # the client went away: wait for the next one, as ser2net does
                _write_all(fd, data)
                self.to_device += len(data)
            if fd in readable:
                try:
                    data = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                conn.sendall(data)
                self.to_client += len(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


def _write_all(fd: int, data: bytes, *, timeout_s: float = 5.0) -> None:
    """Write all of ``data`` to a non-blocking ``fd``, waiting while its buffer is full.

    Raises:
        TimeoutError: the device took nothing for ``timeout_s``.
    """
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            if not select.select([], [fd], [], timeout_s)[1]:
                raise TimeoutError(f"the device took no data for {timeout_s:.0f} s") from None


@pytest.fixture
def dual_link_streetlight(tmp_path_factory: pytest.TempPathFactory, sim_available: None) -> Iterator[Any]:
    """A virtual streetlight with MicroPython only, at 300x: a real board freshly flashed, with its data UART."""
    from hil.backends.sim_driver import _LoopThread
    from hil.sim.board import VirtualBoard

    loop = _LoopThread()
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path_factory.mktemp("blank-flash"), install=False,
                         speed=300)
    try:
        loop.run(board.start(), timeout_s=BOARD_START_S)
        yield board
    finally:
        loop.run(board.stop(), timeout_s=BOARD_STOP_S)
        loop.close()


REPORTS_OVER_THE_BRIDGE = """
def test_reports_arrive_over_the_bridge(hil_board, hil_gateway):
    assert hil_board.data_url == "socket://127.0.0.1:{port}"
    assert hil_gateway.serial_ports == ["socket://127.0.0.1:{port}"]
    rows = hil_gateway.wait_for_reports(count=2, device_id=hil_board.device_id, timeout_s=150)
    assert {{r["link"] for r in rows}} == {{"serial:socket://127.0.0.1:{port}"}}, rows
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
"""


@pytest.mark.timeout(END_TO_END_S)
def test_hil_gateway_reads_the_data_uart_through_a_tcp_serial_bridge(
        pytester: pytest.Pytester, dual_link_streetlight: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    board = dual_link_streetlight
    assert board.data_path
    bridge = TcpSerialBridge(board.data_path)
    try:
        pytester.makepyfile(test_bridge=REPORTS_OVER_THE_BRIDGE.format(port=bridge.port))
        # Spelled with a trailing slash: the plugin hands the gateway the normalized URL.
        result = pytester.runpytest_subprocess(
            "--hil-backend", "serial", "--hil-board", "streetlight-esp32", "--hil-port", board.console_path,
            "--hil-data-port", f"socket://127.0.0.1:{bridge.port}/",
            "--hil-lease-dir", str(tmp_path_factory.mktemp("leases")), "-p", "no:cacheprovider", timeout=INNER_RUN_S)
        assert bridge.failure is None, f"the TCP serial bridge stopped: {bridge.failure!r}"
        result.assert_outcomes(passed=1)
        assert bridge.connections >= 1
        assert bridge.to_client > 0  # the board's REPORT frames crossed the bridge ...
        assert bridge.to_device > 0  # ... and the gateway's ACKs came back across it
    finally:
        bridge.close()


def _handle(tmp_path: Path) -> BoardHandle:
    definition = load_board("streetlight-esp32")
    return BoardHandle(backend="serial", definition=definition, identity=make_identity(definition),
                       workdir=tmp_path)


def test_a_socket_data_port_is_leased_under_its_normalized_url(tmp_path: Path) -> None:

    leases = tmp_path / "leases"
    driver = SerialDriver(selector="/dev/ttyUSB0", data_port=f"SOCKET://Bridge.Example:{DRIVER_PORT}/",
                          lease_dir=leases, ports=[PortInfo("/dev/ttyUSB0")])
    handle = _handle(tmp_path)
    driver.attach(handle)
    try:
        assert handle.data_url == f"socket://bridge.example:{DRIVER_PORT}"
        assert handle.extras["data_lease"].held
        assert handle.extras["data_lease"].resource == f"tcp:bridge.example:{DRIVER_PORT}"
    finally:
        driver.stop(handle)
    assert not list(leases.glob("*.lease"))
    # Another run holding the bridge port under another spelling: this run fails and gives the console back.
    holder = Lease(lease_name(parse_data_port(f"socket://bridge.example:{DRIVER_PORT}").resource_id),
                   lease_dir=leases, duration_s=120)
    holder.acquire(wait_s=0)
    try:
        with pytest.raises(LeaseHeldError):
            driver.attach(handle)
        assert handle.resource is None
        assert [p.name for p in leases.glob("*.lease")] == [holder.path.name]
    finally:
        holder.release()


@pytest.mark.parametrize("console, data", [
    (f"rfc2217://rig-3:{DRIVER_PORT}", f"socket://RIG-3:{DRIVER_PORT}"),
    (f"rfc2217://127.0.0.1:{DRIVER_PORT}", f"socket://localhost:{DRIVER_PORT}"),
    (f"socket://[::1]:{DRIVER_PORT}", f"socket://127.0.0.1:{DRIVER_PORT}"),
])
def test_one_tcp_port_is_one_lease_for_console_and_data_port(tmp_path: Path, console: str, data: str) -> None:
    """Run A holds a TCP port as its console: run B, whose data port is that TCP port however spelled, waits
    for it (and gives back its own console) instead of opening it too."""
    leases = tmp_path / "leases"
    run_a = SerialDriver(selector=console, lease_dir=leases)
    console_lease = run_a._lease(run_a.selector.resource_id)
    try:
        assert console_lease.resource == lease_name(data) == lease_name(console)
        run_b = SerialDriver(selector="/dev/ttyUSB0", data_port=data, lease_dir=leases,
                             ports=[PortInfo("/dev/ttyUSB0")])
        handle = _handle(tmp_path)
        with pytest.raises(LeaseHeldError):
            run_b.attach(handle)
        assert handle.resource is None and "data_lease" not in handle.extras
        assert [p.name for p in leases.glob("*.lease")] == [console_lease.path.name]
    finally:
        console_lease.release()


@pytest.mark.parametrize("resource, name", [
    ("rfc2217://Rig-3:4000", "tcp:rig-3:4000"),
    ("socket://rig-3:4000", "tcp:rig-3:4000"),
    ("socket://localhost:4000", "tcp:localhost:4000"),
    ("rfc2217://127.0.0.2:4000", "tcp:localhost:4000"),
    ("socket://[fe80::1]:4000", "tcp:[fe80::1]:4000"),
    ("/dev/ttyUSB0", "/dev/ttyUSB0"),
    ("usb:A5069RR4", "usb:A5069RR4"),
    ("loop://", "loop://"),
])
def test_lease_names(resource: str, name: str) -> None:
    assert lease_name(resource) == name


@pytest.mark.parametrize("spec, message", [
    ("socket://rig", "--hil-data-port socket://rig: 'socket://rig': expected socket://HOST:PORT with a port 1-65535"),
    ("socket://rig:0", "expected socket://HOST:PORT with a port 1-65535"),
    ("socket://rig:70000", "expected socket://HOST:PORT with a port 1-65535"),
    ("socket://rig:4001/x", "expected socket://HOST:PORT with a port 1-65535 and nothing after it"),
    ("socket://rig:4001?logging=debug", "and nothing after it"),
    ("socket://:4001", "expected socket://HOST:PORT"),
    ("rfc2217://rig:4001", "--hil-data-port rfc2217://rig:4001: the data UART is a local port, usb:<serial number> "
                           "or socket://HOST:PORT (a raw TCP serial bridge), not rfc2217://"),
    ("loop://", "not loop://"),
])
def test_a_data_port_url_the_gateway_cannot_read_is_refused(spec: str, message: str) -> None:
    with pytest.raises(BackendError) as err:
        parse_data_port(spec)
    assert message in str(err.value)


@pytest.mark.parametrize("spec, shown", [
    ("socket://admin:hunter2@rig:4001", "socket://***@rig:4001"),
    ("socket://admin:hunt/er2@rig:4001", "socket://***@rig:4001"),  # a '/' typed into the password
    ("socket://admin:hunt?er2@rig:4001", "socket://***@rig:4001"),
    ("socket://admin:hunt#er2@rig:4001", "socket://***@rig:4001"),
    ("socket://admin:hunt@er2@rig:4001", "socket://***@rig:4001"),
    ("socket://admin:hunter2@rig:4001/x", "socket://***@rig:4001/x"),
    ("rfc2217://admin:hunt/er2@rig:4001", "rfc2217://***@rig:4001"),
])
def test_credentials_in_a_data_port_url_are_refused_without_being_repeated(spec: str, shown: str) -> None:
    with pytest.raises(BackendError) as err:
        parse_data_port(spec)
    text = str(err.value)
    assert text.startswith(f"--hil-data-port {shown}: ")
    if spec.startswith("socket"):
        assert "a socket:// port takes no user or password" in text
    assert not any(part in text + repr(err.value.details) for part in ("admin", "hunt", "er2"))


@pytest.mark.parametrize("console, data, same", [
    ("socket://localhost:4001", "socket://127.0.0.1:4001", True),
    ("rfc2217://rig:4001", "socket://rig:4001", True),
    ("rfc2217://rig:4000", "socket://rig:4001", False),
    ("rfc2217://rig-a:4001", "socket://rig-b:4001", False),
    ("/dev/ttyUSB0", "socket://127.0.0.1:4001", False),
])
def test_same_port_compares_tcp_endpoints(console: str, data: str, same: bool) -> None:
    assert same_port(console, data) is same


@pytest.mark.parametrize("args, message", [
    (["--hil-port", "rfc2217://127.0.0.1:4001", "--hil-data-port", "socket://LOCALHOST:4001"],
     "*--hil-data-port socket://LOCALHOST:4001 is the console port (--hil-port rfc2217://127.0.0.1:4001)*"),
    (["--hil-port", "/dev/ttyUSB0", "--hil-data-port", "socket://rig"],
     "*--hil-data-port socket://rig: 'socket://rig': expected socket://HOST:PORT*"),
    (["--hil-port", "/dev/ttyUSB0", "--hil-data-port", "socket://admin:hunter2@rig:4001"],
     "*--hil-data-port socket://***@rig:4001: a socket:// port takes no user or password*"),
    (["--hil-port", "/dev/ttyUSB0", "--hil-data-port", "socket://admin:hunt/er2@rig:4001"],
     "*--hil-data-port socket://***@rig:4001: a socket:// port takes no user or password*"),
])
def test_a_bad_socket_data_port_is_a_usage_error(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile("def test_boots(hil_board):\n    pass\n")
    result = pytester.runpytest_subprocess("--hil-backend", "serial", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "hunter2" not in result.stderr.str() + result.stdout.str()
    assert "er2" not in result.stderr.str() + result.stdout.str()
