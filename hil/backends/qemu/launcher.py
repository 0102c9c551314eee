"""Run Espressif's QEMU on a flash image: serial console on TCP, QMP on TCP for reset.

The DUT transport connects to ``socket://127.0.0.1:<serial port>``; :meth:`QemuMachine.reset`
sends QMP ``system_reset`` (a board's EN/reset line). QEMU binds its TCP ports itself: they are
chosen by :func:`hil.tcp_ports.choose_ports` (the kernel's free picks, or ports of
``--hil-port-range``), and a port another process takes between that probe and QEMU's bind makes
QEMU exit at start, which is retried on fresh ports.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hil.backends.errors import BackendError, QemuNotFoundError, QemuStartError, QmpError, UnsupportedChipError
from hil.backends.qemu.qmp import QmpClient
from hil.children import spawn_child
from hil.tcp_ports import PortRange, choose_ports, port_free

log = logging.getLogger(__name__)

PORT_TRIES = 3
"""QEMU starts on ports another process took after the probe, before giving up."""


@dataclass(frozen=True)
class QemuTarget:
    """How to run one chip.

    Attributes:
        binary: QEMU executable name.
        machine: ``-machine`` value.
        extra_args: chip-specific arguments.
    """

    binary: str
    machine: str
    extra_args: tuple[str, ...] = ()


# Espressif's fork (github.com/espressif/qemu) provides these machines; upstream QEMU does not.
QEMU_TARGETS: dict[str, QemuTarget] = {
    "esp32": QemuTarget("qemu-system-xtensa", "esp32"),
    # The C3 model runs with instruction counting; its watchdog would reset a paused guest.
    "esp32c3": QemuTarget("qemu-system-riscv32", "esp32c3",
                          ("-icount", "3", "-global", "driver=timer.esp32c3.timg,property=wdt_disable,value=true")),
    # The S3 is an Xtensa chip too: same binary as the ESP32, its own machine.
    "esp32s3": QemuTarget("qemu-system-xtensa", "esp32s3"),
}


def free_tcp_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the kernel's pick)."""
    return choose_ports(1, None)[0]


def find_qemu(chip: str, *, binary: str | None = None) -> tuple[str, QemuTarget]:
    """Locate a QEMU binary that emulates ``chip``.

    Args:
        chip: a chip of :data:`QEMU_TARGETS` (``esp32``, ``esp32c3``, ``esp32s3``).
        binary: explicit path of the QEMU executable (else searched on PATH).

    Returns:
        (path of the binary, target description).

    Raises:
        UnsupportedChipError: unknown chip.
        QemuNotFoundError: no binary, or one without the chip's machine (upstream QEMU).
    """
    try:
        target = QEMU_TARGETS[chip]
    except KeyError:
        raise UnsupportedChipError(chip, sorted(QEMU_TARGETS)) from None
    path = binary or shutil.which(target.binary)
    if path is None:
        raise QemuNotFoundError(target.binary, "not found on PATH; install Espressif's QEMU "
                                "(https://github.com/espressif/qemu releases) and put it on PATH")
    try:
        probe = subprocess.run([path, "-machine", "help"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QemuNotFoundError(path, f"cannot run it: {exc}") from exc
    machines = {line.split()[0] for line in probe.stdout.splitlines() if line.strip() and not line.startswith(" ")}
    if target.machine not in machines:
        raise QemuNotFoundError(path, f"has no '{target.machine}' machine (this is upstream QEMU; "
                                "the ESP32 machines are in Espressif's fork)")
    return path, target


def qemu_command(*, binary: str, machine: str, image: Path, serial_port: int, qmp_port: int,
                 data_uart: tuple[int, int] | None = None, extra_args: Sequence[str] = ()) -> list[str]:
    """Build the QEMU command line (no display; flash as an MTD drive; serial and QMP on loopback TCP).

    Args:
        data_uart: ``(uart id, tcp port)`` of the board's data UART; QEMU maps the n-th
            ``-serial`` to UART n, so unused UARTs in between get ``null``.
    """
    serials = ["-serial", f"tcp:127.0.0.1:{serial_port},server,nowait"]
    if data_uart is not None:
        uart_id, port = data_uart
        for _ in range(1, uart_id):
            serials += ["-serial", "null"]
        serials += ["-serial", f"tcp:127.0.0.1:{port},server,nowait"]
    return [
        binary, "-nographic", "-machine", machine,
        "-drive", f"file={image},if=mtd,format=raw",
        *serials,
        "-qmp", f"tcp:127.0.0.1:{qmp_port},server,nowait",
        "-monitor", "none",
        *extra_args,
    ]


class QemuMachine:
    """One QEMU process running a flash image (a context manager).

    Args:
        image: raw flash image (see :func:`hil.backends.qemu.image.build_flash_image`).
        chip: a chip of :data:`QEMU_TARGETS` (``esp32``, ``esp32c3``, ``esp32s3``).
        binary: QEMU executable; found on PATH when None.
        machine: override the ``-machine`` value (testing the launcher on other QEMU machines).
        extra_args: more QEMU arguments.
        start_timeout_s: limit for QEMU to open its serial port.
        data_uart_id: UART number of the board's data link (e.g. 2) to expose on its own TCP port.
        port_range: the TCP ports QEMU's console, data UART and QMP sockets may use
            (``--hil-port-range``); None: any free ports.
    """

    def __init__(self, *, image: Path, chip: str, binary: str | None = None, machine: str | None = None,
                 extra_args: Sequence[str] = (), start_timeout_s: float = 20.0,
                 data_uart_id: int | None = None, port_range: PortRange | None = None) -> None:
        if data_uart_id is not None and data_uart_id < 1:
            raise BackendError(f"data UART id must be >= 1 (UART0 is the console), got {data_uart_id}",
                               data_uart_id=data_uart_id)
        if machine is None:
            self._binary, target = find_qemu(chip, binary=binary)
            self._machine = target.machine
            self._extra = (*target.extra_args, *extra_args)
        else:
            if binary is None:
                raise QemuNotFoundError("qemu", "a binary is required with an explicit machine")
            self._binary, self._machine, self._extra = binary, machine, tuple(extra_args)
        self.image = image
        self.chip = chip
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self.serial_port = 0
        self.qmp_port = 0
        self.data_uart_id = data_uart_id
        self.data_port = 0
        self.port_range = port_range

    @property
    def serial_url(self) -> str:
        """pyserial URL of the console (for :class:`hil.dut.Dut`)."""
        return f"socket://127.0.0.1:{self.serial_port}"

    @property
    def data_url(self) -> str | None:
        """pyserial URL of the data UART, when one was asked for."""
        return None if self.data_uart_id is None else f"socket://127.0.0.1:{self.data_port}"

    @property
    def pid(self) -> int | None:
        """Process id of QEMU while running."""
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        """Choose QEMU's TCP ports (:attr:`serial_port`, :attr:`qmp_port`, :attr:`data_port`) and
        return the command line :meth:`start` runs with them.

        Raises:
            NoFreePortError: :attr:`port_range` has too few free ports.
        """
        purpose = "QEMU's console, data UART and QMP" if self.data_uart_id is not None else "QEMU's console and QMP"
        ports = choose_ports(3 if self.data_uart_id is not None else 2, self.port_range, purpose=purpose)
        self.serial_port, self.qmp_port = ports[0], ports[1]
        data = None
        if self.data_uart_id is not None:
            self.data_port = ports[2]
            data = (self.data_uart_id, self.data_port)
        return qemu_command(binary=self._binary, machine=self._machine, image=self.image,
                            serial_port=self.serial_port, qmp_port=self.qmp_port, data_uart=data,
                            extra_args=self._extra)

    def _ports(self) -> list[int]:
        return [self.serial_port, self.qmp_port] + ([self.data_port] if self.data_uart_id is not None else [])

    def start(self) -> None:
        """Start QEMU and wait until its serial port accepts connections.

        A QEMU that exits at start while one of its ports is now taken (or saying "Address already in
        use") lost it to another process after the probe: it is started again on other ports (at most
        :data:`PORT_TRIES` times).

        Raises:
            QemuStartError: QEMU exited or did not open its serial port in time.
            NoFreePortError: :attr:`port_range` has too few free ports.
        """
        for attempt in range(1, PORT_TRIES + 1):
            try:
                self._start_once()
                return
            except QemuStartError as exc:
                taken = [port for port in self._ports() if not port_free(port)]
                # QEMU's own word counts too: the thief may have let the port go again by now.
                refused = "Address already in use" in exc.stderr
                if exc.returncode is None or not (taken or refused) or attempt == PORT_TRIES:
                    raise
                log.info("port(s) %s were taken before QEMU bound them; trying others",
                         taken or "(QEMU: address already in use)")

    def _start_once(self) -> None:
        cmd = self.command()
        log.info("starting %s", " ".join(cmd))
        # spawn_child: QEMU gets SIGTERM when this process dies; a killed pytest left it running a
        # core for good (seen: 45 minutes at 80 % CPU after a CI run was stopped).
        self._proc = spawn_child(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self._wait_started(cmd)
        except BaseException:
            # A Ctrl-C (or any error) during the wait: QEMU was started here, so it is stopped here; the caller
            # has no handle on it yet (it would run until this process exits).
            self.stop()
            raise

    def _wait_started(self, cmd: list[str]) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            returncode = self._proc.poll()
            if returncode is not None:
                stderr = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                if self._proc.stderr is not None:
                    self._proc.stderr.close()
                self._proc = None
                raise QemuStartError("QEMU exited at start", command=cmd, returncode=returncode, stderr=stderr)
            # QMP greets only once the machine is built and the main loop runs; a listening
            # socket alone is not enough (QEMU opens it before it rejects a bad -drive).
            if _port_open(self.qmp_port) and self._qmp_answers():
                return
            time.sleep(0.05)
        raise QemuStartError(f"QEMU did not open its ports within {self._start_timeout_s:g} s", command=cmd,
                             returncode=None, stderr="")

    def _qmp_answers(self) -> bool:
        try:
            with QmpClient("127.0.0.1", self.qmp_port, timeout_s=1.0) as qmp:
                qmp.execute("query-status")
            return True
        except QmpError:
            return False

    def qmp(self, *, timeout_s: float = 5.0) -> QmpClient:
        """Open a QMP session (QEMU accepts one client at a time; close it after use)."""
        return QmpClient("127.0.0.1", self.qmp_port, timeout_s=timeout_s)

    def reset(self, *, timeout_s: float = 5.0) -> None:
        """Reset the emulated chip (QMP ``system_reset``), like pulling EN low."""
        with self.qmp(timeout_s=timeout_s) as qmp:
            qmp.execute("system_reset")
        log.info("QEMU %s reset", self.pid)

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Stop QEMU (QMP ``quit``, then terminate/kill if needed); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                with QmpClient("127.0.0.1", self.qmp_port, timeout_s=1.0) as qmp:
                    qmp.execute("quit")
            except Exception as exc:  # noqa: BLE001 - fall through to signals whatever QMP says
                # Not answering (an interrupted start: QMP not up yet): no quit is coming, signal at once.
                log.debug("QMP quit failed (%s); terminating", exc)
                proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def __enter__(self) -> "QemuMachine":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_open(port: int) -> bool:
    """True when something listens on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
