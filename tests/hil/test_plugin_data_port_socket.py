"""``--hil-data-port socket://HOST:PORT``: the serial backend's data UART behind a raw TCP serial bridge
(ser2net without RFC 2217): checked like the gateway checks it, leased like a local port, read by
``hil_gateway`` through the gateway's own ``socket://`` transport.

The end-to-end test puts a real TCP bridge (a thread here, as ser2net would) in front of a virtual
board's data-UART pty; the board, the plugin's serial backend and the gateway are the real ones.
"""

from __future__ import annotations

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
from hil.backends.serial.driver import SerialDriver, parse_data_port, same_port
from hil.backends.serial.select import PortInfo
from hil.boards import load_board

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(240)

BRIDGE_PORT = 43510  # this helper's range (43500-43999)
DRIVER_PORT = 43511


class TcpSerialBridge:
    """A raw TCP serial bridge (ser2net's ``raw`` mode): one client at a time, bytes copied both ways
    between it and a serial device (here a pty), counted."""

    def __init__(self, port: int, device: str) -> None:
        self.device = device
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.2)
        self.to_client = 0
        self.to_device = 0
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-serial-bridge", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
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
                os.write(fd, data)
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


@pytest.fixture
def dual_link_streetlight(tmp_path_factory: pytest.TempPathFactory, sim_available: None) -> Iterator[Any]:
    """A virtual streetlight with MicroPython only, at 300x: a real board freshly flashed, with its data UART."""
    from hil.backends.sim_driver import _LoopThread
    from hil.sim.board import VirtualBoard

    loop = _LoopThread()
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path_factory.mktemp("blank-flash"), install=False,
                         speed=300)
    try:
        loop.run(board.start(), timeout_s=120)
        yield board
    finally:
        loop.run(board.stop(), timeout_s=60)
        loop.close()


REPORTS_OVER_THE_BRIDGE = """
def test_reports_arrive_over_the_bridge(hil_board, hil_gateway):
    assert hil_board.data_url == "socket://127.0.0.1:{port}"
    assert hil_gateway.serial_ports == ["socket://127.0.0.1:{port}"]
    rows = hil_gateway.wait_for_reports(count=2, device_id=hil_board.device_id, timeout_s=150)
    assert {{r["link"] for r in rows}} == {{"serial:socket://127.0.0.1:{port}"}}, rows
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
"""


def test_hil_gateway_reads_the_data_uart_through_a_tcp_serial_bridge(
        pytester: pytest.Pytester, dual_link_streetlight: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    board = dual_link_streetlight
    assert board.data_path
    bridge = TcpSerialBridge(BRIDGE_PORT, board.data_path)
    try:
        pytester.makepyfile(test_bridge=REPORTS_OVER_THE_BRIDGE.format(port=BRIDGE_PORT))
        # Spelled with a capital host and a trailing slash: the plugin hands the gateway the normalized URL.
        result = pytester.runpytest_subprocess(
            "--hil-backend", "serial", "--hil-board", "streetlight-esp32", "--hil-port", board.console_path,
            "--hil-data-port", f"socket://127.0.0.1:{BRIDGE_PORT}/", "--hil-lease-dir",
            str(tmp_path_factory.mktemp("leases")), "-p", "no:cacheprovider", timeout=220)
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
    from hil.backends.serial.lease import Lease, LeaseHeldError

    leases = tmp_path / "leases"
    driver = SerialDriver(selector="/dev/ttyUSB0", data_port=f"SOCKET://Bridge.Example:{DRIVER_PORT}/",
                          lease_dir=leases, ports=[PortInfo("/dev/ttyUSB0")])
    handle = _handle(tmp_path)
    driver.attach(handle)
    try:
        assert handle.data_url == f"socket://bridge.example:{DRIVER_PORT}"
        assert handle.extras["data_lease"].held
        assert handle.extras["data_lease"].resource == f"socket://bridge.example:{DRIVER_PORT}"
    finally:
        driver.stop(handle)
    assert not list(leases.glob("*.lease"))
    # Another run holding the bridge port under another spelling: this run fails and gives the console back.
    holder = Lease(parse_data_port(f"socket://bridge.example:{DRIVER_PORT}").resource_id, lease_dir=leases,
                   duration_s=120)
    holder.acquire(wait_s=0)
    try:
        with pytest.raises(LeaseHeldError):
            driver.attach(handle)
        assert handle.resource is None
        assert [p.name for p in leases.glob("*.lease")] == [holder.path.name]
    finally:
        holder.release()


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


def test_credentials_in_a_socket_data_port_are_refused_without_being_repeated() -> None:
    with pytest.raises(BackendError) as err:
        parse_data_port("socket://admin:hunter2@rig:4001")
    text = str(err.value)
    assert text.startswith("--hil-data-port socket://***@rig:4001: a socket:// port takes no user or password")
    assert "hunter2" not in text and "admin" not in text and "hunter2" not in repr(err.value.details)


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
])
def test_a_bad_socket_data_port_is_a_usage_error(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile("def test_boots(hil_board):\n    pass\n")
    result = pytester.runpytest_subprocess("--hil-backend", "serial", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "hunter2" not in result.stderr.str() + result.stdout.str()
