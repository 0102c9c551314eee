"""Serial port checks done before anything is written to a board."""

from __future__ import annotations

import errno
import grp
import os
import shlex
import stat
import sys
from pathlib import Path

import serial

from hil.field.errors import PortBusyError, PortNotFoundError, PortPermissionError

_URL_SCHEMES = ("rfc2217://", "socket://", "loop://", "spy://")


def is_url(port: str) -> bool:
    """True for pyserial URL ports (remote rigs, QEMU) that have no device node to check."""
    return port.startswith(_URL_SCHEMES)


def list_ports_command() -> str:
    """The command that lists serial ports with this installation's pyserial, for error hints.

    pyserial's ``pyserial-ports`` script beside this interpreter (a venv's ``bin/``, on PATH only when the
    venv is active, so named by its full path), else this interpreter with ``-m serial.tools.list_ports``:
    a bare ``python`` may be another Python, without pyserial.
    """
    script = Path(sys.executable).parent / "pyserial-ports"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m serial.tools.list_ports"


def require_port(port: str) -> None:
    """Raise :class:`PortNotFoundError` for an empty ``--port`` (``--port ""``, an unset variable)."""
    if not port.strip():
        raise PortNotFoundError("no port given (--port is empty); pass the board's serial port, e.g. --port "
                                f"/dev/ttyUSB0 (list ports: {list_ports_command()})", port=port)


def check_port_available(port: str) -> None:
    """Raise if ``port`` does not exist or another program holds it.

    Busy detection uses the same advisory exclusive lock pyserial (and therefore esptool,
    mpremote and the gateway) takes with ``exclusive=True``.

    Raises:
        PortNotFoundError: no such device node.
        PortBusyError: the port is open exclusively elsewhere.
    """
    require_port(port)
    if is_url(port):
        return
    if not os.path.exists(port):
        raise PortNotFoundError(
            f"serial port {port} does not exist; is the board plugged in? (list ports: {list_ports_command()})",
            port=port,
        )
    if not stat.S_ISCHR(os.stat(port).st_mode):
        what = "a directory" if os.path.isdir(port) else "a regular file" if os.path.isfile(port) else "not a device"
        raise PortNotFoundError(
            f"serial port {port} is {what}, not a serial device (list ports: {list_ports_command()})",
            port=port,
        )
    try:
        probe = serial.Serial(port=None, exclusive=True)
        probe.port = port
        probe.open()
    except serial.SerialException as exc:
        if _is_busy(exc):
            raise PortBusyError(
                f"serial port {port} is busy: another program (serial monitor, gateway, another flash run) has it open",
                port=port,
            ) from exc
        if getattr(exc, "errno", None) == errno.EACCES or "Permission denied" in str(exc):
            raise PortPermissionError(permission_message(port), port=port) from exc
        if "Inappropriate ioctl" in str(exc):  # pyserial's "Could not configure port: (25, ...)": ENOTTY
            raise PortNotFoundError(
                f"serial port {port} is not a serial device: it takes no serial settings (list ports: "
                f"{list_ports_command()})", port=port) from exc
        raise PortNotFoundError(f"cannot open serial port {port}: {exc}", port=port) from exc
    else:
        probe.close()
    holders = port_holders(port)
    if holders:
        who = ", ".join(f"PID {pid} ({name})" for pid, name in holders)
        raise PortBusyError(
            f"serial port {port} is in use by {who}: a program that reads the port (a serial monitor such as "
            "screen, minicom, picocom or cat) takes the board's answers away; close it, then retry",
            port=port, holders=[pid for pid, _ in holders])


def port_holders(port: str, *, proc: str = "/proc") -> list[tuple[int, str]]:
    """Other processes that have ``port`` open: ``(pid, command name)``, by PID (Linux; else empty).

    Catches programs that take no lock (``cat``, ``screen``): pyserial's exclusive lock only sees
    programs that take one too. The device node is compared by ``st_rdev`` (a pty's ``/dev/pts/N`` as
    well as a USB serial port). Processes of other users are only seen as root. For a pty, a process
    that holds its master side is the far end (a virtual board, a serial bridge), not a competitor.
    """
    try:
        info = os.stat(port)
    except OSError:
        return []
    if not stat.S_ISCHR(info.st_mode) or not os.path.isdir(proc):
        return []
    pts_index = _pts_index(port)
    holders: dict[int, str] = {}
    far_end: set[int] = set()
    me = os.getpid()
    for entry in os.scandir(proc):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:  # gone, or another user's process (not root)
            continue
        for fd in fds:
            try:
                target = os.stat(f"{proc}/{pid}/fd/{fd}")
            except OSError:
                continue
            if not stat.S_ISCHR(target.st_mode):
                continue
            if target.st_rdev == info.st_rdev:
                holders[pid] = _command_name(proc, pid)
            elif pts_index is not None and _is_master_of(proc, pid, fd, pts_index):
                far_end.add(pid)
    return sorted((pid, name) for pid, name in holders.items() if pid not in far_end)


def _pts_index(port: str) -> int | None:
    """N of a ``/dev/pts/N`` port (after symlinks), else None."""
    real = os.path.realpath(port)
    head, _, tail = real.rpartition("/")
    return int(tail) if head == "/dev/pts" and tail.isdigit() else None


def _is_master_of(proc: str, pid: int, fd: str, index: int) -> bool:
    """True when the fd is a pty master (``/dev/ptmx``) whose slave is ``/dev/pts/<index>``."""
    try:
        if os.readlink(f"{proc}/{pid}/fd/{fd}") not in ("/dev/ptmx", "/dev/pts/ptmx"):
            return False
        with open(f"{proc}/{pid}/fdinfo/{fd}", encoding="ascii", errors="replace") as fh:
            return any(line.split() == ["tty-index:", str(index)] for line in fh)
    except OSError:
        return False


def _command_name(proc: str, pid: int) -> str:
    try:
        with open(f"{proc}/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip() or "?"
    except OSError:
        return "?"


def permission_message(port: str) -> str:
    """What to do when this user may not open ``port``: on Linux, join the group that owns it."""
    text = f"no permission to open serial port {port}"
    if not sys.platform.startswith("linux"):
        return text + "; give your user access to it (or ask the laptop's administrator)"
    try:
        group = grp.getgrgid(os.stat(port).st_gid).gr_name
    except (OSError, KeyError):
        group = "dialout"
    if group == "root":  # udev has not given the node its group (yet): name the usual ones
        return (text + " (it belongs to root only); serial ports are usually given to the dialout group (uucp on "
                "Arch and some other distros): add your user to it with sudo usermod -aG dialout $USER, log out "
                "and back in, and re-plug the board")
    return (text + f" (its group is {group}); add your user to that group: sudo usermod -aG {group} $USER "
            "(the group is dialout on Debian/Ubuntu/Fedora, uucp on Arch and some other distros), then log out "
            "and back in (or run newgrp " + group + ") and retry")


def _is_busy(exc: serial.SerialException) -> bool:
    text = str(exc).lower()
    err = getattr(exc, "errno", None)
    return err in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "lock" in text or "busy" in text
