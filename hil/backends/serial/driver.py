"""Strategy steps for a real board on a serial port (local USB or ``rfc2217://`` rig).

MicroPython itself is flashed beforehand (``civicedge flash``); "flashed" here means our firmware
files are on the board's filesystem, synced by hash over the REPL (only changed files move).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

from gateway.resources import firmware_dir
from hil.backends.board import BoardHandle, wait_reporting_dut
from hil.backends.errors import BackendError
from hil.backends.serial.lease import DEFAULT_LEASE_S, Lease
from hil.backends.serial.select import URL_SCHEMES, BoardSelector, MacReader, PortInfo, select_board
from hil.dut.files import firmware_files

log = logging.getLogger(__name__)


def parse_data_port(spec: str) -> BoardSelector:
    """``--hil-data-port`` as a selector: a local port (``/dev/ttyUSB1``, a pty) or ``usb:<serial>``.

    Raises:
        BackendError: ``mac:`` (a MAC names a chip, not one of its UARTs) or a URL (the gateway
            opens local serial ports only).
    """
    selector = BoardSelector.parse(spec)
    if selector.mac is not None:
        raise BackendError(f"--hil-data-port {spec}: a chip MAC cannot name the data UART; give its port or "
                           "usb:<serial number of its USB-serial adapter>", spec=spec)
    if selector.port is not None and selector.port.startswith(URL_SCHEMES):
        raise BackendError(f"--hil-data-port {spec}: the gateway reads local serial ports only (a device path "
                           "or usb:<serial number>), not URLs", spec=spec)
    return selector


class SerialDriver:
    """Selects, leases, syncs and boots a real board.

    Args:
        selector: ``--hil-port`` value (port, URL, ``usb:<serial>``, ``mac:<addr>``).
        data_port: ``--hil-data-port``: the board's data UART (a local port or ``usb:<serial>`` of a
            second USB-serial adapter, leased like the console), which becomes ``handle.data_url``
            for the gateway; None when the rig does not wire it (then ``hil_gateway`` cannot
            receive reports).
        lease_dir: directory of leases shared by the rig's runs.
        lease_s: lease lifetime (refreshed while held).
        lease_wait_s: how long to wait for a board another run holds.
        start_timeout_s: limit for the firmware to say it runs after the soft reset.
        ports: injectable port list (tests); listed from the OS when None.
        read_mac: injectable MAC reader (tests); esptool when None.
    """

    backend = "serial"

    def __init__(self, *, selector: str | None, lease_dir: Path, data_port: str | None = None, lease_s: float = DEFAULT_LEASE_S,
                 lease_wait_s: float = 0.0, start_timeout_s: float = 60.0, ports: Sequence[PortInfo] | None = None,
                 read_mac: MacReader | None = None,
                 files: Callable[[BoardHandle], dict[str, bytes]] | None = None) -> None:
        if not selector:
            raise BackendError("the serial backend needs --hil-port (a port, rfc2217:// URL, usb:<serial> "
                               "or mac:<address>)", selector=selector)
        self.selector = BoardSelector.parse(selector)
        self.data_selector = parse_data_port(data_port) if data_port else None
        self.lease_dir = lease_dir
        self.lease_s = lease_s
        self.lease_wait_s = lease_wait_s
        self.start_timeout_s = start_timeout_s
        self._ports = ports
        self._read_mac = read_mac
        self._files = files or (lambda h: firmware_files(firmware_dir(),
                                                         board_config=h.definition.to_device_config()))

    def attach(self, handle: BoardHandle) -> None:
        """Find the board and lease it, and its data port (before any step touches them).

        The console lease is ``handle.resource``, the data port's ``handle.extras["data_lease"]``.

        Raises:
            BackendError: a port is not found, or the data port is the console port.
            LeaseHeldError: another run holds the board or its data port.
        """
        leases: list[Lease] = []
        try:
            leases.append(self._lease(self.selector.resource_id))
            chosen = select_board(self.selector, ports=self._ports, read_mac=self._read_mac)
            data_url: str | None = None
            if self.data_selector is not None:
                leases.append(self._lease(self.data_selector.resource_id))
                data_url = select_board(self.data_selector, ports=self._ports).url
                if same_port(chosen.url, data_url):
                    raise BackendError(f"--hil-data-port {self.data_selector.resource_id} is the console port "
                                       f"{chosen.url} (--hil-port {self.selector.resource_id}); the data UART "
                                       "needs its own port", spec=self.data_selector.resource_id)
        except BaseException:
            for lease in reversed(leases):
                lease.release()
            raise
        handle.resource = leases[0]
        if len(leases) > 1:
            handle.extras["data_lease"] = leases[1]
        handle.console_url = chosen.url
        handle.data_url = data_url
        log.info("serial board %s at %s (data link %s)", self.selector.resource_id, chosen.url,
                 handle.data_url or "none")

    def _lease(self, resource_id: str) -> Lease:
        lease = Lease(resource_id, lease_dir=self.lease_dir, duration_s=self.lease_s)
        lease.acquire(wait_s=self.lease_wait_s)
        return lease

    def flash(self, handle: BoardHandle) -> None:
        """Sync our firmware files (and /board.json) by hash."""
        if handle.resource is None:
            self.attach(handle)
        files = self._files(handle)
        handle.extras["files"] = files
        handle.extras["sync"] = handle.dut.sync_files(files)

    def provision(self, handle: BoardHandle) -> None:
        """Write /identity.json (the key goes over the local console only, never to logs)."""
        handle.dut.write_file("/identity.json", json.dumps(handle.identity, sort_keys=True).encode())

    def start(self, handle: BoardHandle) -> None:
        """Soft-reset so boot.py and main.py run, and wait for the firmware's "running" line."""
        handle.dut.soft_reset()
        wait_reporting_dut(handle, timeout_s=self.start_timeout_s)

    def reset(self, handle: BoardHandle) -> None:
        """Pulse EN through RTS, as esptool does on dev kits' auto-reset circuit (DTR held
        inactive so GPIO0 stays high and the chip boots the firmware, not the ROM loader)."""
        handle.dut.pulse_reset()

    def wait_running(self, handle: BoardHandle, *, timeout_s: float) -> None:
        """Wait for the "running" line on the console."""
        wait_reporting_dut(handle, timeout_s=timeout_s)

    def close(self) -> None:
        """Nothing is shared between serial boards."""

    def stop(self, handle: BoardHandle) -> None:
        """Close the console and release the lease (the board keeps running its firmware)."""
        handle.close_dut()
        lease, handle.resource = handle.resource, None
        data_lease = handle.extras.pop("data_lease", None)
        for held in (data_lease, lease):
            if isinstance(held, Lease):
                held.release()


def same_port(console_url: str, data_url: str) -> bool:
    """Whether two selected ports are one device (``/dev/serial/by-id/...`` links resolved)."""
    if console_url == data_url:
        return True
    if "://" in console_url or "://" in data_url:
        return False
    return os.path.realpath(console_url) == os.path.realpath(data_url)
