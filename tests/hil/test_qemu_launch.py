"""QEMU launcher: process lifecycle and QMP reset on a real QEMU; ESP32 boot where Espressif QEMU exists."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from hil.dut import Dut
from hil.backends.errors import QemuNotFoundError, QemuStartError, QmpError, UnsupportedChipError
from hil.backends.qemu.image import build_flash_image
from hil.backends.qemu.launcher import QemuMachine, find_qemu, qemu_command
from hil.backends.qemu.qmp import QmpClient

UPSTREAM_RISCV = shutil.which("qemu-system-riscv32")
needs_upstream = pytest.mark.skipif(
    UPSTREAM_RISCV is None,
    reason="qemu-system-riscv32 not installed (Debian: apt-get install qemu-system-misc); "
           "the launcher lifecycle test runs the upstream sifive_u machine")


def espressif_qemu_reason(chip: str) -> str | None:
    """Why the ESP32 boot test cannot run here, or None."""
    try:
        find_qemu(chip)
    except QemuNotFoundError as exc:
        return f"no Espressif QEMU for {chip}: {exc}"
    return None


def test_command_line_shape(tmp_path: Path) -> None:
    cmd = qemu_command(binary="qemu-system-xtensa", machine="esp32", image=tmp_path / "f.bin",
                       serial_port=5555, qmp_port=5556)
    assert cmd[:4] == ["qemu-system-xtensa", "-nographic", "-machine", "esp32"]
    assert f"file={tmp_path / 'f.bin'},if=mtd,format=raw" in cmd
    assert "tcp:127.0.0.1:5555,server,nowait" in cmd and "tcp:127.0.0.1:5556,server,nowait" in cmd


def test_find_qemu_errors() -> None:
    with pytest.raises(UnsupportedChipError):
        find_qemu("esp8266")
    with pytest.raises(QemuNotFoundError) as err:
        find_qemu("esp32", binary="/nonexistent/qemu-system-xtensa")
    assert err.value.binary == "/nonexistent/qemu-system-xtensa"


@pytest.mark.skipif(shutil.which("qemu-system-xtensa") is None, reason="qemu-system-xtensa not installed")
def test_upstream_qemu_is_told_apart_from_espressif() -> None:
    if espressif_qemu_reason("esp32") is None:
        pytest.skip("the installed qemu-system-xtensa is Espressif's (has the esp32 machine)")
    with pytest.raises(QemuNotFoundError) as err:
        find_qemu("esp32")
    assert "esp32" in err.value.reason and "Espressif" in err.value.reason


@needs_upstream
@pytest.mark.timeout(60)
def test_lifecycle_serial_socket_and_qmp_reset(tmp_path: Path) -> None:
    assert UPSTREAM_RISCV is not None
    image = tmp_path / "flash.bin"
    with image.open("wb") as fh:  # sifive_u's SPI flash model wants a 32 MiB image
        fh.truncate(32 * 1024 * 1024)
    machine = QemuMachine(image=image, chip="esp32c3", binary=UPSTREAM_RISCV, machine="sifive_u",
                          extra_args=("-bios", "none"))
    with machine:
        pid = machine.pid
        assert pid is not None and machine.serial_url.startswith("socket://127.0.0.1:")
        port = serial.serial_for_url(machine.serial_url, timeout=0.2)  # the DUT transport's way in
        port.write(b"\r\n")
        port.close()
        with machine.qmp() as qmp:
            assert qmp.execute("query-status")["status"] == "running"
        machine.reset()
        with machine.qmp() as qmp:
            with pytest.raises(QmpError) as err:
                qmp.execute("no-such-command")
            assert err.value.error_class == "CommandNotFound"
    assert machine.pid is None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid), "QEMU still running after stop()"
    with pytest.raises(QmpError) as conn:
        machine.qmp(timeout_s=0.5)
    assert conn.value.error_class == "connection"


_OWNER = """
import sys, time
from pathlib import Path
from hil.backends.qemu.launcher import QemuMachine
machine = QemuMachine(image=Path(sys.argv[1]), chip="esp32c3", binary=sys.argv[2], machine="sifive_u",
                      extra_args=("-bios", "none"))
machine.start()
print(machine.pid, flush=True)
time.sleep(600)
"""


@needs_upstream
@pytest.mark.timeout(60)
def test_qemu_does_not_outlive_a_killed_owner(tmp_path: Path) -> None:
    """A pytest killed mid-test cannot stop its QEMU; the kernel must (a leaked one ran a core for good)."""
    assert UPSTREAM_RISCV is not None
    image = tmp_path / "flash.bin"
    with image.open("wb") as fh:
        fh.truncate(32 * 1024 * 1024)
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(image), UPSTREAM_RISCV], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        assert _alive(pid)
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive_not_zombie(pid):
        time.sleep(0.05)
    assert not _alive_not_zombie(pid), "QEMU still running after its owner was killed"


def _alive_not_zombie(pid: int) -> bool:
    """True while ``pid`` runs (not reaped by us: a zombie of init counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; Popen.wait reaped it in stop().
    return True


@needs_upstream
@pytest.mark.timeout(60)
def test_start_error_shows_qemu_message(tmp_path: Path) -> None:
    assert UPSTREAM_RISCV is not None
    image = tmp_path / "flash.bin"
    image.write_bytes(b"\xff" * 4096)
    machine = QemuMachine(image=image, chip="esp32c3", binary=UPSTREAM_RISCV, machine="virt",
                          extra_args=("-bios", "none"))
    with pytest.raises(QemuStartError) as err:
        machine.start()
    assert err.value.returncode not in (None, 0) and "if=mtd" in err.value.stderr
    assert machine.pid is None


def test_port_probe_does_not_confuse_closed_ports() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    with pytest.raises(QmpError) as err:
        QmpClient("127.0.0.1", free, timeout_s=0.5)
    assert err.value.error_class == "connection"


def test_data_uart_gets_its_own_serial_in_uart_order(tmp_path: Path) -> None:
    cmd = qemu_command(binary="q", machine="esp32", image=tmp_path / "f.bin", serial_port=1, qmp_port=2,
                       data_uart=(2, 3))
    serials = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-serial"]
    assert serials == ["tcp:127.0.0.1:1,server,nowait", "null", "tcp:127.0.0.1:3,server,nowait"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("chip, variable, example", [
    ("esp32", "CIVICEDGE_MPY_RELEASE_ESP32", "ESP32_GENERIC-v1.27.0.bin"),
    ("esp32s3", "CIVICEDGE_MPY_RELEASE_ESP32S3", "ESP32_GENERIC_S3-v1.27.0.bin"),
])
def test_image_boots_in_espressif_qemu(tmp_path: Path, chip: str, variable: str, example: str) -> None:
    """Full QEMU path: release image + our littlefs, boot, REPL over socket://, QMP reset."""
    reason = espressif_qemu_reason(chip)
    if reason is not None:
        pytest.skip(reason)
    release = os.environ.get(variable)
    if not release:
        pytest.skip(f"no MicroPython release image: set {variable}={example}")
    built = build_flash_image(release_image=Path(release), chip=chip, output=tmp_path / "flash.bin",
                              files={"/hello.txt": b"hi from littlefs", "/main.py": b"print('civic-qemu-main')\n"})
    with QemuMachine(image=built.path, chip=chip) as machine, Dut(machine.serial_url) as dut:
        machine.reset()  # boot again with the console attached
        dut.expect("civic-qemu-main", timeout_s=180)
        assert dut.read_file("/hello.txt") == b"hi from littlefs"
        assert dut.eval("__import__('sys').platform") == "esp32"
        machine.reset()
        dut.expect("civic-qemu-main", timeout_s=180)


@needs_upstream
@pytest.mark.timeout(60)
def test_a_ctrl_c_while_qemu_starts_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA: an interrupt while the launcher waited for QEMU's ports left QEMU running (the caller had no handle
    on it yet) until the test process exited."""
    assert UPSTREAM_RISCV is not None
    image = tmp_path / "flash.bin"
    with image.open("wb") as fh:
        fh.truncate(32 * 1024 * 1024)
    machine = QemuMachine(image=image, chip="esp32c3", binary=UPSTREAM_RISCV, machine="sifive_u",
                          extra_args=("-bios", "none"))
    started: list[int] = []

    def interrupted(self: QemuMachine) -> bool:
        assert self._proc is not None  # noqa: SLF001 - the QEMU being waited for
        started.append(self._proc.pid)  # noqa: SLF001
        raise KeyboardInterrupt

    monkeypatch.setattr(QemuMachine, "_qmp_answers", interrupted)
    with pytest.raises(KeyboardInterrupt):
        machine.start()
    [pid] = started
    assert machine.pid is None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive_not_zombie(pid):
        time.sleep(0.05)
    assert not _alive_not_zombie(pid), "QEMU still running after an interrupted start"
