"""Serial port checks done before anything is written to a board."""

from __future__ import annotations

import errno
import os
import stat

import serial

from hil.field.errors import PortBusyError, PortNotFoundError

_URL_SCHEMES = ("rfc2217://", "socket://", "loop://", "spy://")


def is_url(port: str) -> bool:
    """True for pyserial URL ports (remote rigs, QEMU) that have no device node to check."""
    return port.startswith(_URL_SCHEMES)


def check_port_available(port: str) -> None:
    """Raise if ``port`` does not exist or another program holds it.

    Busy detection uses the same advisory exclusive lock pyserial (and therefore esptool,
    mpremote and the gateway) takes with ``exclusive=True``.

    Raises:
        PortNotFoundError: no such device node.
        PortBusyError: the port is open exclusively elsewhere.
    """
    if is_url(port):
        return
    if not os.path.exists(port):
        raise PortNotFoundError(
            f"serial port {port} does not exist; is the board plugged in? (list ports: python -m serial.tools.list_ports)",
            port=port,
        )
    if not stat.S_ISCHR(os.stat(port).st_mode):
        what = "a directory" if os.path.isdir(port) else "a regular file" if os.path.isfile(port) else "not a device"
        raise PortNotFoundError(
            f"serial port {port} is {what}, not a serial device (list ports: python -m serial.tools.list_ports)",
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
        if "Inappropriate ioctl" in str(exc):  # pyserial's "Could not configure port: (25, ...)": ENOTTY
            raise PortNotFoundError(
                f"serial port {port} is not a serial device: it takes no serial settings (list ports: python -m "
                "serial.tools.list_ports)", port=port) from exc
        raise PortNotFoundError(f"cannot open serial port {port}: {exc}", port=port) from exc
    else:
        probe.close()


def _is_busy(exc: serial.SerialException) -> bool:
    text = str(exc).lower()
    err = getattr(exc, "errno", None)
    return err in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "lock" in text or "busy" in text
