"""Talking to a board's MicroPython REPL for the field tools: connect, read facts, write identity.

Every DUT failure is translated into a field error that tells the technician what to do. Errors
raised while the identity (which holds the key) is read or written are re-raised without the
DUT's message, since that can echo the code or bytes that carried the key.
"""

from __future__ import annotations

import logging
import shlex
import time
from typing import Any, Callable, TypeVar

from hil.dut import Dut
from hil.dut.dut import ReplFloodError
from hil.dut.errors import DeviceConnectError, DeviceDisconnectedError, DeviceError, DeviceTimeoutError, DutError
from hil.dut.watchdog import HOLD_WATCHDOG_CODE
from hil.field.errors import BoardNotAnsweringError, DamagedIdentityError, DeviceIOError, IdentityFormatError
from hil.field.identity import Identity, parse_identity
from hil.field.ports import check_port_available, is_url

log = logging.getLogger(__name__)

IDENTITY_PATH = "/identity.json"
BOARD_CONFIG_PATH = "/board.json"
MANIFEST_PATH = "/firmware.json"


T = TypeVar("T")
ATTEMPTS = 3
# What a damaged /identity.json needs; the provision CLI says its exact command instead.
REPROVISION_HINT = ("give it a new identity: civicedge provision --port {port} --id ID --zone ZONE --location LAT,LON "
                    "(--registry DIR | --gateway URL --token-file FILE) --force")
# While a tool holds a board at the REPL, the firmware's watchdog (if it started one) is stretched to
# this and fed; the board resets itself back into service this long after the tool lets go.
SERVICE_WINDOW_S = 600


def with_retries(dut: Dut, action: Callable[[], T], *, attempts: int = ATTEMPTS) -> T:
    """Run an idempotent REPL ``action``, retrying after transient link trouble.

    Firmware that is still winding down after Ctrl-C (or a noisy line) can print into the raw-REPL
    exchange; every action used here (hashing, reading, writing via temp file + rename) is safe to
    repeat, so a fresh raw REPL and another go is the robust answer. Device exceptions other than
    the ``NameError`` such interleaving causes are real and raised at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except (DutError, ValueError) as exc:  # ValueError: base64 of a read garbled by interleaved output
            real = isinstance(exc, DeviceError) and exc.exception_type not in ("NameError", "KeyboardInterrupt")
            if real or attempt == attempts:
                raise
            log.info("REPL exchange on %s disturbed (%s), retrying", dut.url, type(exc).__name__)
            time.sleep(0.2 * attempt)
            try:
                dut.enter_raw_repl(timeout_s=5.0)
                hold_watchdog(dut)  # the firmware may have been restarted (by its watchdog, too)
            except DutError:
                pass
    raise AssertionError("unreachable")


def open_board(port: str, *, timeout_s: float = 10.0) -> Dut:
    """Open the board's REPL console and make sure MicroPython answers (raw REPL).

    Stops the running firmware (Ctrl-C), like any REPL tool, and holds its watchdog for the session
    (:func:`hold_watchdog`).

    Raises:
        PortNotFoundError, PortBusyError: the port is missing or held by another program.
        BoardNotAnsweringError: no MicroPython REPL answers on the port.
    """
    if not is_url(port):
        check_port_available(port)
    try:
        dut = Dut(port)
    except DeviceConnectError as exc:
        raise BoardNotAnsweringError(f"cannot open {port}: {exc.details.get('cause', exc)}", port=port) from exc
    try:
        return _stop_firmware(dut, port, timeout_s)
    except BaseException:
        dut.close()  # every failure, a Ctrl-C too: a port left open stays locked until garbage collection
        raise


def _stop_firmware(dut: Dut, port: str, timeout_s: float) -> Dut:
    """:func:`open_board` once the port is open: the raw REPL and the watchdog held."""
    try:
        dut.enter_raw_repl(timeout_s=timeout_s)
    except DutError as exc:
        if isinstance(exc, ReplFloodError):  # not silent: another baud rate, or another program writing
            raise BoardNotAnsweringError(
                f"no MicroPython REPL answered on {port} within {timeout_s:g} s, but {exc.total} bytes kept arriving "
                "without a REPL prompt: wrong baud rate? another program writing to the port? a board sending "
                "its firmware's log? press RESET and retry; check that this is the board's console port",
                port=port, timeout_s=timeout_s,
            ) from exc
        raise BoardNotAnsweringError(
            f"no MicroPython REPL answered on {port} within {timeout_s:g} s; is this the board's console port "
            "(its USB serial), not the data UART? another program (a serial monitor, cat) may have the port open "
            "and take its answers; check the cable and that MicroPython is flashed (civicedge flash ... without --firmware-only), then press RESET and retry; "
            "a battery board (a bin) answers only while awake from deep sleep: press RESET or wake it (open the "
            "lid) just before the command, or give a longer --repl-timeout",
            port=port, timeout_s=timeout_s,
        ) from exc
    log.info("MicroPython answers on %s", port)
    try:
        with_retries(dut, lambda: hold_watchdog(dut))
    except DutError as exc:
        raise BoardNotAnsweringError(f"the board on {port} stopped answering right after its firmware was "
                                     f"stopped: {exc}; press RESET and retry", port=port) from exc
    return dut


def hold_watchdog(dut: Dut) -> bool:
    """Stretch the stopped firmware's watchdog to :data:`SERVICE_WINDOW_S` and feed it.

    Without this, a board whose firmware started its watchdog (``wdt_ms`` in its board definition,
    30 s for the shipped boards) resets in the middle of a session that takes longer. A board whose
    firmware did not start one (unprovisioned, safe or recovery mode, or a bare MicroPython) is left
    as it is. Returns True if a watchdog was held.
    """
    held = bool(dut.eval_code(HOLD_WATCHDOG_CODE % (SERVICE_WINDOW_S * 1000)))
    if held:
        log.info("firmware watchdog on %s stretched to %d s for this session (the board resets into service "
                 "that long after it is left at the REPL)", dut.url, SERVICE_WINDOW_S)
    return held


def device_mpy(dut: Dut) -> int:
    """Return the device's ``sys.implementation._mpy``.

    Raises:
        BoardNotAnsweringError: the value cannot be read (not MicroPython, or too old to report it).
    """
    try:
        value: Any = with_retries(dut, lambda: dut.eval("getattr(__import__('sys').implementation, '_mpy', None)"))
    except DutError as exc:
        raise BoardNotAnsweringError(f"cannot read the MicroPython version on {dut.url}: {exc}", port=dut.url) from exc
    if not isinstance(value, int):
        raise BoardNotAnsweringError(
            f"the board on {dut.url} does not report sys.implementation._mpy; flash a MicroPython >= 1.19",
            port=dut.url)
    return value


def read_identity(dut: Dut) -> Identity | None:
    """Return the board's identity, or None when it has none (unprovisioned).

    Raises:
        DeviceIOError: the file exists but cannot be read.
        DamagedIdentityError: it is malformed (the message says how to replace it, never the key).
    """
    try:
        exists = with_retries(dut, lambda: dut.eval(_exists_expr(IDENTITY_PATH)))
    except DutError as exc:
        raise DeviceIOError(f"cannot look for {IDENTITY_PATH} on {dut.url}: {exc}", port=dut.url) from exc
    if not exists:
        return None
    try:
        data = with_retries(dut, lambda: dut.read_file(IDENTITY_PATH, secret=True))
    except DutError:
        raise DeviceIOError(f"cannot read {IDENTITY_PATH} on {dut.url} (link or flash problem); retry",
                            port=dut.url) from None
    try:
        return parse_identity(data)
    except IdentityFormatError as exc:
        raise DamagedIdentityError(
            f"the board on {dut.url} has a damaged {IDENTITY_PATH} ({_reason(exc)}); "
            + REPROVISION_HINT.format(port=shlex.quote(dut.url)), port=dut.url, reason=_reason(exc)) from None


def _reason(exc: IdentityFormatError) -> str:
    """What :func:`parse_identity` found wrong, without the "the device's /identity.json" prefix."""
    return str(exc).removeprefix(f"the device's {IDENTITY_PATH} ")


def write_identity(dut: Dut, identity: Identity) -> None:
    """Write ``/identity.json`` atomically (temp file + rename).

    Raises:
        DeviceIOError: the write failed (message carries no key material).
    """
    try:
        with_retries(dut, lambda: dut.write_file(IDENTITY_PATH, identity.to_json_bytes(), secret=True))
    except DeviceError as exc:  # the board itself refused the write (e.g. OSError: no space left)
        raise DeviceIOError(f"the board on {dut.url} could not write {IDENTITY_PATH} ({exc.exception_type}); check "
                            "its free flash and retry", port=dut.url) from None
    except (DeviceDisconnectedError, DeviceTimeoutError) as exc:
        # A cable pulled, a board reset or powered off mid-write: not a flash problem.
        raise DeviceIOError(
            f"the connection to the board on {dut.url} was lost while its {IDENTITY_PATH} was being written (cable "
            "pulled, board reset or powered off?); the file is replaced in one step, so the board holds its previous "
            "identity or the new one (or, if the link went at that very step, none); check the cable, plug the board "
            "back in and re-run", port=dut.url, link_lost=True) from None
    except DutError:
        raise DeviceIOError(f"writing {IDENTITY_PATH} on {dut.url} failed: the board's answer was garbled (a "
                            "noisy link?); check the cable and retry", port=dut.url) from None
    log.info("wrote identity of %s on %s", identity.id, dut.url)


def read_text(dut: Dut, path: str) -> str | None:
    """Return a small text file's content, or None when it is missing."""
    try:
        if not with_retries(dut, lambda: dut.eval(_exists_expr(path))):
            return None
        return with_retries(dut, lambda: dut.read_file(path)).decode(errors="replace")
    except DutError as exc:
        raise DeviceIOError(f"cannot read {path} on {dut.url}: {exc}", port=dut.url) from exc


def _exists_expr(path: str) -> str:
    """A device expression: is the root-level file ``path`` present?"""
    return f"{path.lstrip('/')!r} in __import__('os').listdir('/')"


OUTBOX_DIR = "/outbox"
# Un-sent frames of the firmware's outbox (firmware civic.store: /outbox/<seq>.r, .a for alarms).
_COUNT_OUTBOX = ("sum(1 for e in __import__('os').ilistdir(%r) if e[0][-2:] in ('.r', '.a')) "
                 "if 'outbox' in __import__('os').listdir('/') else 0") % OUTBOX_DIR


def count_outbox(dut: Dut) -> int:
    """How many un-sent report frames the board's ``/outbox`` holds (framed under its current key)."""
    try:
        value: Any = with_retries(dut, lambda: dut.eval(_COUNT_OUTBOX))
    except DutError as exc:
        raise DeviceIOError(f"cannot read {OUTBOX_DIR} on {dut.url}: {exc}", port=dut.url) from exc
    return int(value) if isinstance(value, int) else 0
