"""Pick a real board: by port, by USB serial number, or by chip MAC.

Ports move around when boards are re-plugged (``/dev/ttyUSB0`` becomes ``ttyUSB1``); a rig names
its boards by something stable instead: the USB-serial adapter's serial number, or the chip's
factory MAC (read with esptool, which resets the chip into its ROM bootloader and back).

Selector strings (``--hil-port``): ``/dev/ttyUSB0``, ``rfc2217://host:4000``, ``socket://...``
(used as given), ``usb:<serial number>``, ``mac:<aa:bb:cc:dd:ee:ff>``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from hil.backends.errors import AmbiguousPortError, BackendError, NoMatchingPortError

log = logging.getLogger(__name__)

URL_SCHEMES = ("rfc2217://", "socket://", "loop://", "spy://")

MacReader = Callable[[str], str]
"""Reads a chip's base MAC through a port (``port -> "aa:bb:cc:dd:ee:ff"``)."""


@dataclass(frozen=True)
class PortInfo:
    """A serial port as the OS lists it (the parts of pyserial's ``ListPortInfo`` we use)."""

    device: str
    serial_number: str | None = None
    vid: int | None = None
    pid: int | None = None
    description: str = ""


@dataclass(frozen=True)
class BoardSelector:
    """How to find one board: exactly one of the fields is set."""

    port: str | None = None
    serial_number: str | None = None
    mac: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "BoardSelector":
        """Parse a selector string (see module docs).

        Raises:
            BackendError: empty spec, or a MAC that is not 6 hex bytes.
        """
        spec = spec.strip()
        if not spec:
            raise BackendError("empty board selector; give a port, usb:<serial> or mac:<address>", spec=spec)
        if spec.startswith("usb:"):
            serial_number = spec[4:].strip()
            if not serial_number:
                raise BackendError("usb: selector needs a serial number, e.g. usb:A5069RR4", spec=spec)
            return cls(serial_number=serial_number)
        if spec.startswith("mac:"):
            return cls(mac=normalize_mac(spec[4:]))
        return cls(port=spec)

    @property
    def resource_id(self) -> str:
        """Stable id used as the lease name."""
        if self.serial_number is not None:
            return f"usb:{self.serial_number}"
        if self.mac is not None:
            return f"mac:{self.mac}"
        return str(self.port)

    def criteria(self) -> dict[str, str]:
        """The selection as a dict (for error fields)."""
        return {k: v for k, v in (("port", self.port), ("serial_number", self.serial_number),
                                  ("mac", self.mac)) if v is not None}


@dataclass(frozen=True)
class SelectedBoard:
    """Result of a selection.

    Attributes:
        url: what to open (device path or pyserial URL).
        resource_id: stable id to lease.
        port: OS port info when the board is local.
        mac: the chip MAC when it was read.
    """

    url: str
    resource_id: str
    port: PortInfo | None = None
    mac: str | None = None


def normalize_mac(text: str) -> str:
    """``"AA-BB-CC-DD-EE-FF"`` / ``"aabbccddeeff"`` -> ``"aa:bb:cc:dd:ee:ff"``.

    Raises:
        BackendError: not 6 bytes of hex.
    """
    digits = re.sub(r"[:\-. ]", "", text.strip()).lower()
    if not re.fullmatch(r"[0-9a-f]{12}", digits):
        raise BackendError(f"not a MAC address: {text!r} (expected 6 hex bytes, e.g. 24:0a:c4:12:34:56)", mac=text)
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def list_serial_ports() -> list[PortInfo]:
    """List the host's serial ports (pyserial ``comports``)."""
    from serial.tools import list_ports

    return [PortInfo(device=p.device, serial_number=p.serial_number, vid=p.vid, pid=p.pid,
                     description=p.description or "") for p in list_ports.comports()]


def read_chip_mac(port: str, *, attempts: int = 3) -> str:
    """Read an ESP chip's factory MAC with esptool (resets the chip to its ROM and back).

    Raises:
        BackendError: esptool could not talk to a chip on ``port``.
    """
    from esptool.cmds import detect_chip

    try:
        esp = detect_chip(port, connect_attempts=attempts)
    except Exception as exc:  # noqa: BLE001 - esptool raises FatalError/SerialException/OSError
        raise BackendError(f"cannot read the chip MAC on {port}: {exc}", port=port) from exc
    with esp:
        mac = esp.read_mac("BASE_MAC")
        esp.hard_reset()
    return normalize_mac(bytes(mac).hex())


def select_board(selector: BoardSelector, *, ports: Sequence[PortInfo] | None = None,
                 read_mac: MacReader | None = None) -> SelectedBoard:
    """Find the one board matching ``selector``.

    Args:
        selector: port, USB serial number or MAC.
        ports: the candidate ports (listed from the OS when None; injectable for tests).
        read_mac: MAC reader for MAC selection (esptool when None).

    Raises:
        NoMatchingPortError: nothing matches.
        AmbiguousPortError: more than one port matches.
    """
    if selector.port is not None and selector.port.startswith(URL_SCHEMES):
        # A remote rig (rfc2217) or QEMU socket: nothing to look up locally.
        return SelectedBoard(url=selector.port, resource_id=selector.resource_id)
    candidates = list(ports) if ports is not None else list_serial_ports()
    names = [p.device for p in candidates]
    if selector.port is not None:
        found = [p for p in candidates if p.device == selector.port]
        if not found and os.path.exists(selector.port):
            # A device node the OS does not enumerate as a USB/serial port (a pty, a udev symlink
            # like /dev/serial/by-id/...): the user named it explicitly, so use it.
            return SelectedBoard(url=selector.port, resource_id=selector.resource_id)
        if not found:
            raise NoMatchingPortError(f"no serial port {selector.port} (ports: {', '.join(names) or 'none'})",
                                      criteria=selector.criteria(), candidates=names)
        return SelectedBoard(url=found[0].device, resource_id=selector.resource_id, port=found[0])
    if selector.serial_number is not None:
        found = [p for p in candidates if p.serial_number == selector.serial_number]
        return _exactly_one(selector, found, names)
    if selector.mac is not None:
        reader = read_mac or read_chip_mac
        matches: list[PortInfo] = []
        for port in candidates:
            try:
                mac = normalize_mac(reader(port.device))
            except BackendError as exc:
                log.info("skipping %s while looking for MAC %s: %s", port.device, selector.mac, exc)
                continue
            if mac == selector.mac:
                matches.append(port)
        chosen = _exactly_one(selector, matches, names)
        return SelectedBoard(url=chosen.url, resource_id=chosen.resource_id, port=chosen.port, mac=selector.mac)
    raise NoMatchingPortError("empty selector", criteria={}, candidates=names)


def _exactly_one(selector: BoardSelector, found: list[PortInfo], names: list[str]) -> SelectedBoard:
    if not found:
        raise NoMatchingPortError(
            f"no board matches {selector.resource_id} (ports: {', '.join(names) or 'none'})",
            criteria=selector.criteria(), candidates=names)
    if len(found) > 1:
        raise AmbiguousPortError(
            f"{selector.resource_id} matches several ports: {', '.join(p.device for p in found)}",
            criteria=selector.criteria(), candidates=[p.device for p in found])
    return SelectedBoard(url=found[0].device, resource_id=selector.resource_id, port=found[0])
