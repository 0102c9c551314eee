"""--hil-port-range covers the QEMU backend: its console, data UART and QMP sockets use ports of the range.

Espressif's QEMU (the ESP32 machines) is seldom installed, so the plugin's way to QEMU is checked with a
stand-in executable on PATH where it would be (it answers ``-machine help`` like Espressif's QEMU, logs the command
line it was started with and exits, as QEMU does when it cannot start). A real (upstream) QEMU is started
in the range where one is installed. Each test's range is a block of free ports of its own, picked at random
(held_ports.port_block).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest
from held_ports import port_block, take, taken  # noqa: F401 - port_block, taken: fixtures

from hil.backends.errors import QemuStartError
from hil.backends.qemu.launcher import QemuMachine
from hil.tcp_ports import NoFreePortError, PortRange, choose_ports, port_free
from tests.hil.test_qemu_image import fake_release_image

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(120)

RANGE_SIZE = 20
"""Ports of the range the tests that start QEMU give it: three a start, and room to start again on others."""
TCP_SERVER = re.compile(r"tcp:127\.0\.0\.1:(\d+),server,nowait")


@pytest.fixture
def port_range(port_block: Callable[[int], PortRange]) -> PortRange:
    """A ``--hil-port-range`` of :data:`RANGE_SIZE` free ports, the test's own."""
    return port_block(RANGE_SIZE)


def _machine(tmp_path: Path, ports: PortRange | None, *, data_uart_id: int | None = 2) -> QemuMachine:
    # An explicit machine: the command is built without looking for a QEMU binary.
    return QemuMachine(image=tmp_path / "flash.bin", chip="esp32", binary="qemu-system-xtensa", machine="esp32",
                       data_uart_id=data_uart_id, port_range=ports)


def test_the_command_uses_ports_of_the_range(tmp_path: Path, port_range: PortRange) -> None:
    machine = _machine(tmp_path, port_range)
    cmd = machine.command()
    ports = [int(p) for p in TCP_SERVER.findall(" ".join(cmd))]
    assert len(ports) == 3 and len(set(ports)) == 3, cmd  # console, data UART, QMP
    assert all(port in port_range for port in ports), cmd
    assert cmd[cmd.index("-qmp") + 1] == f"tcp:127.0.0.1:{machine.qmp_port},server,nowait"
    assert machine.serial_url == f"socket://127.0.0.1:{machine.serial_port}"
    assert machine.data_url == f"socket://127.0.0.1:{machine.data_port}"
    assert {machine.serial_port, machine.data_port, machine.qmp_port} == set(ports)


def test_ports_in_use_are_skipped(tmp_path: Path, taken: list[socket.socket],
                                  port_block: Callable[[int], PortRange]) -> None:
    block = port_block(5)
    for port in range(block.low, block.low + 2):
        take(port, taken)
    machine = _machine(tmp_path, block)
    machine.command()
    assert {machine.serial_port, machine.data_port, machine.qmp_port} == set(range(block.low + 2, block.high + 1))


def test_too_few_free_ports_is_a_clear_error(tmp_path: Path, taken: list[socket.socket],
                                             port_block: Callable[[int], PortRange]) -> None:
    block = port_block(3)
    take(block.low, taken)
    with pytest.raises(NoFreePortError, match=f"no 3 free ports in --hil-port-range {block} for QEMU's console, "
                                              "data UART and QMP") as err:
        _machine(tmp_path, block).command()
    assert (err.value.needed, err.value.free, err.value.port_range) == (3, 2, str(block))


def test_without_a_data_uart_two_ports(tmp_path: Path, port_block: Callable[[int], PortRange]) -> None:
    block = port_block(2)
    machine = _machine(tmp_path, block, data_uart_id=None)
    cmd = machine.command()
    assert sorted(int(p) for p in TCP_SERVER.findall(" ".join(cmd))) == [block.low, block.high]
    assert machine.data_url is None


def _time_wait_port() -> int:
    """A port whose only socket is a connection the server closed first (TIME_WAIT, about a minute), as a
    stopped QEMU leaves its console port: its server socket set SO_REUSEADDR, as QEMU's and asyncio's do."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = int(server.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            conn, _ = server.accept()
            conn.close()  # the server's side closes first: it is the one left in TIME_WAIT
            assert client.recv(1) == b""
    return port


def test_a_port_in_time_wait_is_free_to_a_listener() -> None:
    port = _time_wait_port()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # the TIME_WAIT entry is there (a bind without SO_REUSEADDR fails)
    assert port_free(port)
    with socket.socket() as listener:  # as QEMU and asyncio bind it
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not port_free(port)  # a listening port is still taken


def test_without_a_range_the_kernel_picks_distinct_free_ports() -> None:
    ports = choose_ports(3, None)
    assert len(set(ports)) == 3
    assert all(port_free(p) for p in ports)


STANDIN = """\
#!{python}
# Stands in for Espressif's QEMU (none on this machine): answers -machine help, logs its command line
# and exits as QEMU does when it cannot start. With STANDIN_STEAL set, its first run leaves its console
# port bound by another process (one that took it between the harness's probe and QEMU's bind); with
# STANDIN_IN_USE, its first run says QEMU's "Address already in use" and leaves every port free.
import os, re, subprocess, sys
args = sys.argv[1:]
if args[:2] == ["-machine", "help"]:
    print("Supported machines are:")
    print("esp32                ESP32 stand-in")
    sys.exit(0)
log = os.environ["STANDIN_LOG"]
with open(log, "a") as f:
    f.write(" ".join(args) + "\\n")
runs = sum(1 for _ in open(log))
console = int(re.findall(r"tcp:127\\.0\\.0\\.1:(\\d+),server", " ".join(args))[0])
if os.environ.get("STANDIN_STEAL") and runs == 1:
    holder = subprocess.Popen([sys.executable, "-c", "import socket, sys, time\\n"
                               "s = socket.socket(); s.bind(('127.0.0.1', %d)); s.listen()\\n"
                               "print('ready', flush=True); time.sleep(30)" % console],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    holder.stdout.readline()
    with open(log + ".holder", "w") as f:
        f.write(str(holder.pid))
if os.environ.get("STANDIN_IN_USE") and runs == 1:
    # QEMU's words when a port it was given is bound by then (the thief may have let it go since)
    sys.stderr.write("qemu-system-xtensa: -serial tcp:127.0.0.1:%d,server,nowait: Failed to bind socket: "
                     "Address already in use\\n" % console)
    sys.exit(1)
sys.stderr.write("stand-in qemu cannot start: " + " ".join(args) + "\\n")
sys.exit(1)
"""


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in ``qemu-system-xtensa`` first on PATH; yields the file its runs are logged to."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "qemu-system-xtensa"
    exe.write_text(STANDIN.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "standin.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_LOG", str(log))
    yield log
    holder = Path(f"{log}.holder")
    if holder.exists():
        try:
            os.kill(int(holder.read_text()), 9)
        except ProcessLookupError:
            pass


def _logged_ports(log: Path) -> list[list[int]]:
    return [[int(p) for p in TCP_SERVER.findall(line)] for line in log.read_text().splitlines()]


def test_a_port_taken_after_the_probe_is_retried_on_others(tmp_path: Path, standin: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           port_range: PortRange) -> None:
    monkeypatch.setenv("STANDIN_STEAL", "1")
    machine = QemuMachine(image=tmp_path / "flash.bin", chip="esp32", data_uart_id=2, port_range=port_range,
                          start_timeout_s=10)
    with pytest.raises(QemuStartError, match="stand-in qemu cannot start"):
        machine.start()
    first, second = _logged_ports(standin)  # started again once, then its own failure is raised
    assert all(port in port_range for port in first + second)
    assert first[0] not in second, "the stolen console port was tried again"


def test_an_address_in_use_exit_is_retried_though_its_ports_read_free(tmp_path: Path, standin: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      port_range: PortRange) -> None:
    # The process that took the port may have closed it again before the harness probes.
    monkeypatch.setenv("STANDIN_IN_USE", "1")
    machine = QemuMachine(image=tmp_path / "flash.bin", chip="esp32", port_range=port_range, start_timeout_s=10)
    with pytest.raises(QemuStartError, match="stand-in qemu cannot start"):
        machine.start()
    assert len(_logged_ports(standin)) == 2  # started again once, then its own failure is raised


def test_an_exit_with_ports_free_is_not_retried(tmp_path: Path, standin: Path, port_range: PortRange) -> None:
    machine = QemuMachine(image=tmp_path / "flash.bin", chip="esp32", port_range=port_range, start_timeout_s=10)
    with pytest.raises(QemuStartError) as err:
        machine.start()
    assert err.value.returncode == 1
    assert len(_logged_ports(standin)) == 1


def test_the_plugin_starts_qemu_on_ports_of_the_range(pytester: pytest.Pytester, standin: Path,
                                                       port_range: PortRange) -> None:
    image = pytester.path / "ESP32_GENERIC-stand-in.bin"
    image.write_bytes(fake_release_image(0x1000))
    pytester.makepyfile("""
        def test_board(hil_board):
            pass
    """)
    result = pytester.runpytest("--hil-backend", "qemu", "--hil-qemu-image", str(image),
                                f"--hil-port-range={port_range}", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*stand-in qemu cannot start*"])
    (ports,) = _logged_ports(standin)
    assert len(ports) == 3 and all(port in port_range for port in ports), ports  # the streetlight has a data UART


@pytest.mark.skipif(shutil.which("qemu-system-riscv32") is None,
                    reason="qemu-system-riscv32 not installed (Debian: apt-get install qemu-system-misc); "
                           "starting a real QEMU in the range runs the upstream sifive_u machine")
def test_a_real_qemu_listens_in_the_range(tmp_path: Path, port_range: PortRange) -> None:
    binary = shutil.which("qemu-system-riscv32")
    assert binary is not None
    image = tmp_path / "flash.bin"
    with image.open("wb") as fh:  # sifive_u's SPI flash model wants a 32 MiB image
        fh.truncate(32 * 1024 * 1024)
    machine = QemuMachine(image=image, chip="esp32c3", binary=binary, machine="sifive_u",
                          extra_args=("-bios", "none"), port_range=port_range)
    with machine:
        assert machine.serial_port in port_range and machine.qmp_port in port_range
        with machine.qmp() as qmp:
            assert qmp.execute("query-status")["status"] == "running"
        assert not port_free(machine.serial_port)


def test_standin_is_what_the_backend_finds(standin: Path) -> None:
    # Guards the tests above: the stand-in must be taken for Espressif QEMU, or they test nothing.
    from hil.backends.qemu.launcher import find_qemu

    path, target = find_qemu("esp32")
    assert Path(path).parent == standin.parent / "bin" and target.machine == "esp32"
