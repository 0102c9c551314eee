"""The device-under-test transport: MicroPython's raw REPL over any pyserial URL, for every backend.

A :class:`Dut` holds mpremote's ``SerialTransport`` (which opens the URL with
``serial.serial_for_url``: a pty path for a virtual board, ``socket://`` for QEMU, ``rfc2217://``
for a remote rig, ``/dev/ttyUSB0`` for a local board) and adds what a test harness needs on top:
explicit timeouts on every call, a timeout told apart from a disconnect, device exceptions
raised as :class:`~hil.dut.errors.DeviceError` carrying the device's traceback, ``eval``
returning Python values, and file sync that hashes on the device and copies only what changed.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, cast

import serial
from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport

from hil.dut.errors import (
    DeviceConnectError,
    DeviceDisconnectedError,
    DeviceError,
    DeviceProtocolError,
    DeviceResultError,
    DeviceTimeoutError,
    DutError,
)
from hil.dut.files import device_path, parent_dirs

log = logging.getLogger(__name__)

# The ">" prompt after the banner is left unread: mpremote's exec waits for it.
RAW_REPL_BANNER = b"raw REPL; CTRL-B to exit\r\n"
# Serial read timeout while polling: the resolution of our overall timeouts.
_POLL_S = 0.2
# Shortest wait for the raw REPL's "OK" when the exec's time is (nearly) used up.
_MIN_ACK_S = 0.05
# How long, after an exec timeout and Ctrl-C, the board gets to show the raw REPL again.
RECOVER_S = 3.0
# After a failed recovery: how long the line must stay quiet before stale raw REPL banners are over.
RESYNC_QUIET_S = 0.2
# Longest one-write raw REPL entry (Ctrl-C, Ctrl-A, on_stop code, Ctrl-D): the ESP32 port's console
# input ring buffer holds 260 bytes, and a board still printing its KeyboardInterrupt traceback may
# not empty it before the rest arrives (a USB-UART bridge has no flow control).
ONE_WRITE_MAX = 200
# Bytes of file content per exec when writing (base64 inflates by 4/3; stays small for an ESP32 heap).
WRITE_CHUNK = 2048
READ_CHUNK = 2048
# A wait for an answer (_read_until) keeps at most this much of what it reads: an exec's output, a soft
# reset's console text; more ends the wait (as a timeout), instead of filling memory from a port that streams.
_READ_MAX = 16 * 1024 * 1024
_TAIL_KEEP = 8192  # a wait for the raw REPL banner keeps only its last bytes (they explain a failure)
# Bytes received this recently when a wait ends without its answer: they were still arriving (a flood,
# not a board that fell silent).
_BUSY_GAP_S = 0.5
_IDLE_S = 0.01  # a wait's sleep while no byte waits (as mpremote's read_until)

_HASH_CODE = """\
import hashlib, binascii
def _civic_hash(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(m[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
print(repr([_civic_hash(p) for p in {paths!r}]))
del _civic_hash
"""

_MKDIRS_CODE = """\
import os
for d in {dirs!r}:
    try:
        os.mkdir(d)
    except OSError:
        pass
"""


class ReplFloodError(DeviceTimeoutError):
    """No raw REPL banner within the time while bytes kept arriving on the port: not a silent board but
    one sending at another baud rate, or another program writing to the port. A :class:`DeviceTimeoutError`
    (operation ``enter raw REPL``) whose message says so.

    Attributes:
        total: bytes received during the wait (``received`` holds only the last of them).
    """

    def __init__(self, *, url: str, timeout_s: float, received: bytes, total: int, secret: bool = False) -> None:
        super().__init__(url=url, operation="enter raw REPL", timeout_s=timeout_s, received=received, secret=secret)
        self.total = total
        self.details["received_total"] = total
        self.message += (f"; {total} bytes kept arriving without a REPL prompt: wrong baud rate? another program "
                         "writing to the port?")


@dataclass(frozen=True)
class SyncResult:
    """Outcome of :meth:`Dut.sync_files`.

    Attributes:
        copied: device paths written because they were missing or different.
        unchanged: device paths whose on-device SHA-256 already matched.
    """

    copied: tuple[str, ...]
    unchanged: tuple[str, ...]


class Dut:
    """A MicroPython board reached through its REPL console.

    Args:
        url: pty path, device node, ``socket://host:port`` or ``rfc2217://host:port``.
        baudrate: serial speed (ignored by ptys and sockets).
        exclusive: take pyserial's exclusive lock on local ports.
        on_stop: code run at each entry into the raw REPL (the firmware was just stopped), e.g. to
            hold its watchdog. :attr:`on_stop_result` is its printed text (e.g. ``"True\n"``); an
            exception in it is logged and the code run once more, not raised.
        on_stop_one_write: send ``on_stop`` in the same write as the Ctrl-C and Ctrl-A, so that it
            runs with no host round trip after the firmware stops (a virtual board at high speed,
            whose watchdog lasts milliseconds of wall time). Only for a console that queues its
            input and never drops it (the simulator's): a real board's console buffer is small
            (260 bytes on the ESP32) and overflows while the board prints its traceback. By
            default ``on_stop`` runs as an ordinary exec right after the raw REPL is entered.

    Raises:
        DeviceConnectError: the URL cannot be opened.
        ValueError: ``on_stop_one_write`` with an ``on_stop`` that makes the write
            :data:`ONE_WRITE_MAX` bytes or longer.
    """

    def __init__(self, url: str, *, baudrate: int = 115200, exclusive: bool = True,
                 on_stop: str | None = None, on_stop_one_write: bool = False) -> None:
        if on_stop_one_write and on_stop is not None:
            size = len(_one_write_payload(on_stop))
            if size >= ONE_WRITE_MAX:
                raise ValueError(f"on_stop code makes a {size}-byte raw REPL entry; a one-write entry must stay "
                                 f"under {ONE_WRITE_MAX} bytes (a board's console input buffer); shorten it or "
                                 "pass on_stop_one_write=False")
        self.url = url
        self.on_stop = on_stop
        self.on_stop_one_write = on_stop_one_write
        self.on_stop_result: str | None = None
        try:
            self._transport = SerialTransport(url, baudrate=baudrate, exclusive=exclusive, timeout=_POLL_S)
        except (TransportError, OSError, ValueError) as exc:
            raise DeviceConnectError(url=url, cause=_open_cause(url, exc)) from exc
        # mpremote swaps .serial for an intercepting wrapper only with mount_local(), never used here.
        self._serial: serial.Serial = cast(serial.Serial, self._transport.serial)
        self._in_raw_repl = False
        self._pending = b""  # console output read by expect() past its match
        self._last_wait: tuple[int, bool] = (0, False)  # of the last _read_until: bytes read, still arriving
        # Set when an exec timeout's recovery gave up: its Ctrl-A may still be queued on the board,
        # which then prints a stale raw REPL banner once the code ends.
        self._resync = False
        # True while on_stop runs again after failing: an entry then (its timeout's recovery) runs no on_stop.
        self._in_stop_hook = False
        # True during write_file/read_file(secret=True): errors then show neither the code nor what came back.
        self._secret = False
        # Whether this connection stopped the board's program (Ctrl-C) since it last started it (soft or hard
        # reset): a harness that leaves a board stopped restarts it (the board would stay at its REPL).
        self.firmware_stopped = False
        log.debug("opened DUT %s", url)

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Leave the raw REPL (so the board's firmware console is usable) and close the port."""
        try:
            if self._in_raw_repl:
                self._serial.write(b"\r\x02")
        except (OSError, serial.SerialException):
            pass
        self._in_raw_repl = False
        try:
            self._transport.close()
        except (OSError, serial.SerialException) as exc:
            log.debug("closing %s: %s", self.url, exc)

    def __enter__(self) -> "Dut":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- REPL control ------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Send Ctrl-C (stops running code, e.g. the firmware's asyncio loop)."""
        with self._remote("interrupt", 1.0):
            self.firmware_stopped = True
            self._serial.write(b"\r\x03")
        self._in_raw_repl = False

    def enter_raw_repl(self, *, timeout_s: float = 10.0) -> None:
        """Stop whatever runs (Ctrl-C) and enter the raw REPL, then run :attr:`on_stop` (if set).

        Raises:
            DeviceTimeoutError: no raw REPL banner within ``timeout_s``.
            DeviceDisconnectedError: the link went away.
        """
        with self._remote("enter raw REPL", timeout_s):
            self._serial.timeout = _POLL_S
            deadline = time.monotonic() + timeout_s
            self._pending = b""
            self.firmware_stopped = True
            on_stop = None if self._in_stop_hook else self.on_stop
            if on_stop is not None and self.on_stop_one_write and not self._resync:
                self._enter_raw_repl_and_run(on_stop, deadline, timeout_s)
                return
            # Ctrl-C twice: asyncio firmware may swallow the first interrupt while cancelling tasks.
            for _ in range(2):
                self._serial.write(b"\r\x03")
                time.sleep(0.05)
            self._drain()
            # One Ctrl-A only: a second would print a second banner that the next exec would
            # mistake for its answer.
            self._serial.write(b"\r\x01")
            received = self._read_until(RAW_REPL_BANNER, timeout_overall=max(0.1, deadline - time.monotonic()),
                                        tail_only=True)
            if received.endswith(RAW_REPL_BANNER) and self._resync:
                received = self._skip_stale_banners(deadline)
            if not received.endswith(RAW_REPL_BANNER):
                raise self._no_banner(timeout_s, received)
            self._resync = False
            self._in_raw_repl = True
            self._transport.in_raw_repl = True
        if on_stop is not None:  # as an ordinary exec (also in one-write mode after a resync)
            self._run_stop_hook(on_stop, deadline)

    def _enter_raw_repl_and_run(self, code: str, deadline: float, timeout_s: float) -> None:
        """Ctrl-C, Ctrl-A and ``code`` in one write: the board runs ``code`` right after it stops.

        A stopped firmware no longer feeds its watchdog: with a round trip between the stop and the
        code that holds it, the watchdog (30 s, or 0.1 s of wall time on a virtual board at 300x)
        could reset the board under the raw REPL just entered. The second Ctrl-C, for firmware that
        swallows the first, comes 50 ms later: at the raw REPL's prompt it only clears the input.
        The board answers banner, ``>OK``, stdout, Ctrl-D, stderr, Ctrl-D, then the ``>`` that is
        left for the next exec.
        """
        # Output already here (the running firmware's log) cannot be mistaken for the answer then.
        self._serial.reset_input_buffer()
        self._serial.write(_one_write_payload(code))
        time.sleep(0.05)
        self._serial.write(b"\r\x03")
        received = self._read_until(RAW_REPL_BANNER, timeout_overall=max(0.1, deadline - time.monotonic()),
                                    tail_only=True)
        if not received.endswith(RAW_REPL_BANNER):
            # The board may still answer all this later (a firmware slow to stop): the next entry
            # must read until quiet first, or it takes that late answer for its own.
            self._resync = True
            raise self._no_banner(timeout_s, received)
        parts: list[bytes] = []
        for _ in range(2):
            data = self._read_until(b"\x04", timeout_overall=max(0.1, deadline - time.monotonic()))
            if not data.endswith(b"\x04"):
                self._resync = True
                raise DeviceTimeoutError(url=self.url, operation="run the code after entering the raw REPL",
                                         timeout_s=timeout_s, received=received + b"".join(parts) + data,
                                         secret=self._secret)
            parts.append(data[:-1])
        if not parts[0].startswith(b">OK"):
            self._resync = True
            raise DeviceProtocolError(url=self.url, operation="enter raw REPL", received=parts[0],
                                      secret=self._secret)
        self._in_raw_repl = True
        self._transport.in_raw_repl = True
        out, err = (p.decode(errors="replace").replace("\r\n", "\n") for p in (parts[0][3:], parts[1]))
        if err:
            # E.g. the second Ctrl-C reached a board that was still running the code: run it again.
            log.debug("code after entering the raw REPL on %s failed, running it again: %s", self.url, err.strip())
            self._run_stop_hook(code, deadline)
            return
        self._stop_hook_done(out, err)

    def _run_stop_hook(self, code: str, deadline: float) -> None:
        """Run ``code`` as an ordinary exec within the entry's time left.

        While it runs, an entry into the raw REPL (the recovery after its own timeout) runs no
        on_stop: otherwise a hook that fails and then times out would recurse without end.
        """
        self._in_stop_hook = True
        try:
            out, err = self._exec_raw(code, timeout_s=max(_MIN_ACK_S, deadline - time.monotonic()))
        finally:
            self._in_stop_hook = False
        self._stop_hook_done(out, err)

    def _stop_hook_done(self, out: str, err: str) -> None:
        self.on_stop_result = out
        if err:
            log.warning("code run after stopping the firmware on %s failed: %s", self.url, err.strip())

    def _skip_stale_banners(self, deadline: float) -> bytes:
        """After a failed recovery: read until the line is quiet, then ask for one fresh banner.

        The recovery's queued Ctrl-A makes the board print a banner (and ``>``) besides the one just
        read; mpremote would take that stale banner for the answer to its next command. Once
        nothing arrived for :data:`RESYNC_QUIET_S`, the board has answered everything queued, and
        one more Ctrl-A yields exactly one banner whose ``>`` is left for mpremote.
        """
        stale = self._read_quiet(RESYNC_QUIET_S, until=deadline)
        log.debug("skipped stale raw REPL output on %s: %r", self.url, stale)
        self._serial.write(b"\r\x01")
        return self._read_until(RAW_REPL_BANNER, timeout_overall=max(0.5, deadline - time.monotonic()),
                                tail_only=True)

    def _read_quiet(self, quiet_s: float, *, until: float) -> bytes:
        """Read until nothing arrives for ``quiet_s`` (or ``until``, a monotonic time, passes)."""
        data = bytearray()
        last = time.monotonic()
        while time.monotonic() < until:
            n = self._serial.in_waiting
            if n:
                data += self._serial.read(n)
                last = time.monotonic()
            elif time.monotonic() - last >= quiet_s:
                break
            else:
                time.sleep(0.01)
        return bytes(data)

    def pulse_reset(self, *, pulse_s: float = 0.1) -> None:
        """Hard-reset a board wired like Espressif dev kits (RTS -> EN, DTR -> GPIO0).

        Raises:
            DeviceProtocolError: the port has no modem lines (pty, plain socket).
        """
        with self._remote("hard reset", pulse_s + 1.0):
            try:
                self._serial.dtr = False
                self._serial.rts = True
                time.sleep(pulse_s)
                self._serial.rts = False
                self.firmware_stopped = False
            except (OSError, serial.SerialException) as exc:
                raise DeviceProtocolError(url=self.url, operation="hard reset (no RTS/DTR lines)",
                                          received=str(exc).encode()) from exc
        self._in_raw_repl = False
        self._pending = b""

    def soft_reset(self, *, timeout_s: float = 10.0) -> str:
        """Soft-reset from the friendly REPL, so ``boot.py`` and ``main.py`` run (the firmware starts).

        Returns:
            Console output up to and including the soft-reboot line.

        Raises:
            DeviceTimeoutError: no ``soft reboot`` line within ``timeout_s``.
        """
        with self._remote("soft reset", timeout_s):
            if not self._in_raw_repl:
                self.enter_raw_repl(timeout_s=timeout_s)
            self._serial.write(b"\r\x02")  # friendly REPL: there Ctrl-D runs boot.py + main.py
            self._in_raw_repl = False
            self._transport.in_raw_repl = False
            self._read_until(b">>> ", timeout_overall=timeout_s)
            self._serial.write(b"\x04")
            out: bytes = self._read_until(b"soft reboot\r\n", timeout_overall=timeout_s)
            if not out.endswith(b"soft reboot\r\n"):
                raise DeviceTimeoutError(url=self.url, operation="soft reset", timeout_s=timeout_s, received=out)
        self.firmware_stopped = False
        return out.decode(errors="replace")

    # --- watching the running firmware --------------------------------------------------------

    def read_output(self, *, duration_s: float) -> bytes:
        """Collect what the board prints for ``duration_s`` (the firmware keeps running)."""
        out = bytearray(self._pending)
        self._pending = b""
        with self._remote("read output", duration_s):
            end = time.monotonic() + duration_s
            while time.monotonic() < end:
                self._serial.timeout = min(_POLL_S, max(0.0, end - time.monotonic()))
                out += self._serial.read(max(1, self._serial.in_waiting))
            self._serial.timeout = _POLL_S
        return bytes(out)

    def expect(self, pattern: str | bytes, *, timeout_s: float = 10.0) -> re.Match[bytes]:
        """Wait until the console output matches the regular expression ``pattern``.

        Output after the match is kept for the next ``expect``/``read_output``.

        Raises:
            DeviceTimeoutError: no match within ``timeout_s`` (``received`` holds what came).
        """
        regex = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        buf = bytearray(self._pending)
        end = time.monotonic() + timeout_s
        with self._remote("expect", timeout_s):
            while True:
                match = regex.search(bytes(buf))
                if match is not None:
                    self._pending = bytes(buf[match.end():])
                    return match
                if time.monotonic() >= end:
                    self._pending = bytes(buf)
                    raise DeviceTimeoutError(url=self.url, operation=f"expect {regex.pattern!r}",
                                             timeout_s=timeout_s, received=bytes(buf))
                self._serial.timeout = min(_POLL_S, max(0.0, end - time.monotonic()))
                buf += self._serial.read(max(1, self._serial.in_waiting))
                self._serial.timeout = _POLL_S

    # --- code execution ----------------------------------------------------------------------

    def exec(self, code: str, *, timeout_s: float = 10.0) -> str:
        """Run ``code`` on the device and return what it printed.

        Raises:
            DeviceError: the code raised; carries the device traceback.
            DeviceTimeoutError: it did not finish within ``timeout_s`` (it is then interrupted).
            DeviceDisconnectedError: the link went away.
        """
        out, err = self._exec_raw(code, timeout_s=timeout_s)
        if err:
            raise DeviceError(url=self.url, traceback=err, stdout=out, code=code, secret=self._secret)
        return out

    def eval(self, expression: str, *, timeout_s: float = 10.0) -> Any:
        """Evaluate ``expression`` on the device and return its value as a Python object.

        The device prints ``repr(value)``; the host parses it with ``ast.literal_eval``, so the
        value must be made of literals (numbers, str, bytes, tuples, lists, dicts, sets, None, bool).

        Raises:
            DeviceError: evaluating raised on the device.
            DeviceResultError: the repr is not a Python literal (e.g. an object).
        """
        out = self.exec(f"print(repr({expression}))", timeout_s=timeout_s)
        try:
            return ast.literal_eval(out.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DeviceResultError(url=self.url, expression=expression, output=out) from None

    def _exec_raw(self, code: str, *, timeout_s: float) -> tuple[str, str]:
        deadline = time.monotonic() + timeout_s
        if not self._in_raw_repl:
            self.enter_raw_repl(timeout_s=timeout_s)
        with self._remote("exec", timeout_s):
            unanswered = False
            try:
                # The device acknowledges the code ("OK") before running it; a board that runs it
                # first (the simulator executes synchronously) acknowledges only when it ends, so
                # the wait for the acknowledgement gets the remaining time, and an acknowledgement
                # after the deadline means the code overran it.
                self._serial.timeout = max(_MIN_ACK_S, deadline - time.monotonic())
                self._transport.exec_raw_no_follow(code.encode())
            except TransportError:
                if time.monotonic() < deadline - 0.05:
                    raise  # an unexpected answer: a protocol error (translated by _remote)
                unanswered = True  # no answer at all within the time
            finally:
                # Before recovering: its reads must not wait as long as the acknowledgement did.
                self._serial.timeout = _POLL_S
            if unanswered or time.monotonic() > deadline:
                self._timed_out(timeout_s, b"")
            parts: list[bytes] = []
            for _ in range(2):  # stdout, then the exception text; each ends with Ctrl-D
                data = self._read_until(b"\x04", timeout_overall=max(0.0, deadline - time.monotonic()))
                if not data.endswith(b"\x04"):
                    self._timed_out(timeout_s, b"".join(parts) + data)
                parts.append(data[:-1])
        out, err = (p.decode(errors="replace") for p in parts)
        return out.replace("\r\n", "\n"), err.replace("\r\n", "\n")

    def _timed_out(self, timeout_s: float, received: bytes) -> None:
        """Interrupt code that overran its ``exec`` timeout, try to get the raw REPL back, and raise.

        Raises:
            DeviceTimeoutError: always; ``recovered`` says whether the board answers again.
        """
        self._abort()
        try:
            self.enter_raw_repl(timeout_s=RECOVER_S)
            recovered = True
        except DeviceTimeoutError:
            recovered = False
            self._resync = True
        raise DeviceTimeoutError(url=self.url, operation="exec", timeout_s=timeout_s, received=received,
                                 recovered=recovered, secret=self._secret)

    def _abort(self) -> None:
        """Interrupt code that overran its timeout; the next call re-enters the raw REPL."""
        try:
            self._serial.write(b"\x03")
        except (OSError, serial.SerialException):
            pass
        self._in_raw_repl = False

    def _read_until(self, ending: bytes, *, timeout_overall: float, tail_only: bool = False) -> bytes:
        """The bytes received up to and including ``ending``, or those received when ``timeout_overall``
        seconds have passed, however many keep arriving.

        Replaces mpremote's read_until, which checks its overall timeout only while no byte waits: a
        port that keeps sending (a wrong baud rate, another program writing to it) held the wait until
        the bytes stopped, and everything received was kept. One byte is read at a time, as mpremote
        does, so nothing after ``ending`` is taken from the next reader.

        Args:
            tail_only: keep only the last :data:`_TAIL_KEEP` bytes (a wait for a banner, whose bytes
                before it only explain a failure); otherwise at most :data:`_READ_MAX` bytes are read
                and the wait ends there, without ``ending``.

        Sets :attr:`_last_wait` (bytes received, whether they were still arriving at the end).
        """
        deadline = time.monotonic() + timeout_overall
        keep = _TAIL_KEEP if tail_only else _READ_MAX
        data = bytearray()
        total = 0
        last_rx: float | None = None
        # The port's timeout is left as it is (setting it renegotiates an rfc2217 port): a byte is read
        # only once one waits, so the read returns at once; between bytes, short sleeps up to the deadline.
        while not data.endswith(ending):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not self._serial.in_waiting:
                time.sleep(min(_IDLE_S, left))
                continue
            byte = self._serial.read(1)
            if not byte:
                continue
            data += byte
            total += 1
            last_rx = time.monotonic()
            if len(data) >= keep:
                if not tail_only:
                    break
                del data[:len(data) - keep // 2]  # the tail: an ending split across the cut stays whole
        busy = last_rx is not None and not data.endswith(ending) and time.monotonic() - last_rx < _BUSY_GAP_S
        self._last_wait = (total, busy)
        return bytes(data)

    def _no_banner(self, timeout_s: float, received: bytes) -> DeviceTimeoutError:
        """The error for a raw REPL entry that got no banner within ``timeout_s`` (see :class:`ReplFloodError`)."""
        total, busy = self._last_wait
        if busy:
            return ReplFloodError(url=self.url, timeout_s=timeout_s, received=received, total=total,
                                  secret=self._secret)
        return DeviceTimeoutError(url=self.url, operation="enter raw REPL", timeout_s=timeout_s, received=received,
                                  secret=self._secret)

    def _drain(self) -> None:
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            n = self._serial.in_waiting
            if not n:
                time.sleep(0.02)
                if not self._serial.in_waiting:
                    break
                continue
            self._serial.read(n)

    @contextmanager
    def _remote(self, operation: str, timeout_s: float) -> Iterator[None]:
        """Translate transport failures into our errors: disconnect vs protocol."""
        try:
            yield
        except (DeviceTimeoutError, DeviceDisconnectedError, DeviceProtocolError):
            raise
        except TransportError as exc:
            self._in_raw_repl = False
            raise DeviceProtocolError(url=self.url, operation=operation, received=str(exc).encode(),
                                      secret=self._secret) from exc
        except (serial.SerialException, OSError) as exc:
            self._in_raw_repl = False
            raise DeviceDisconnectedError(url=self.url, operation=operation, cause=str(exc)) from exc

    # --- files -------------------------------------------------------------------------------

    def hash_files(self, paths: Iterable[str], *, timeout_s: float = 30.0) -> dict[str, str | None]:
        """SHA-256 (hex) of each device file, computed on the device; None for a missing file."""
        clean = [device_path(p) for p in paths]
        if not clean:
            return {}
        digests = self.eval_code(_HASH_CODE.format(paths=clean), timeout_s=timeout_s)
        if not isinstance(digests, list) or len(digests) != len(clean):
            raise DeviceResultError(url=self.url, expression="hash_files", output=repr(digests))
        return dict(zip(clean, digests))

    def eval_code(self, code: str, *, timeout_s: float = 10.0) -> Any:
        """Run ``code`` whose last action prints one ``repr(...)``, and return that value."""
        out = self.exec(code, timeout_s=timeout_s)
        try:
            return ast.literal_eval(out.strip().splitlines()[-1] if out.strip() else "")
        except (ValueError, SyntaxError, IndexError):
            raise DeviceResultError(url=self.url, expression=code[:80], output=out) from None

    @contextmanager
    def _secret_transfer(self, secret: bool) -> Iterator[None]:
        """While ``secret``, the errors raised carry neither the code sent nor the bytes received."""
        before, self._secret = self._secret, self._secret or secret
        try:
            yield
        finally:
            self._secret = before

    def write_file(self, path: str, data: bytes, *, timeout_s: float = 30.0, secret: bool = False) -> None:
        """Write ``data`` to ``path`` on the device: to a temporary file, then renamed over the
        target, so a reset in the middle never leaves a half-written module behind.

        ``secret`` (a file holding a key): an error shows neither the code sent (which carries the
        content in base64) nor what the board answered. Payloads are never shown in any case.
        """
        with self._secret_transfer(secret):
            self._write_file(path, data, timeout_s=timeout_s)

    def _write_file(self, path: str, data: bytes, *, timeout_s: float) -> None:
        target = device_path(path)
        tmp = target + ".part"
        self.make_dirs(parent_dirs([target]), timeout_s=timeout_s)
        self.exec(f"_civic_f = open({tmp!r}, 'wb')\nfrom binascii import a2b_base64 as _civic_d", timeout_s=timeout_s)
        close = "_civic_f.close()\ndel _civic_f, _civic_d"
        try:
            for start in range(0, len(data), WRITE_CHUNK):
                # bytes literal: the wasm port's pure-Python binascii rejects str.
                chunk = base64.b64encode(data[start:start + WRITE_CHUNK])
                self.exec(f"_civic_f.write(_civic_d({chunk!r}))", timeout_s=timeout_s)
        except BaseException as exc:
            self._close_after(exc, close, timeout_s)
            raise
        self.exec(close, timeout_s=timeout_s)
        self.exec(
            "import os\n"
            f"try:\n    os.rename({tmp!r}, {target!r})\n"
            f"except OSError:\n    os.remove({target!r})\n    os.rename({tmp!r}, {target!r})\n",
            timeout_s=timeout_s)

    def read_file(self, path: str, *, timeout_s: float = 30.0, secret: bool = False) -> bytes:
        """Return the content of ``path`` on the device.

        ``secret`` (a file holding a key): an error shows neither the code sent nor the bytes received
        (a timeout mid-read would show part of the content).

        Raises:
            DeviceError: e.g. ``OSError: [Errno 2] ENOENT`` for a missing file.
        """
        with self._secret_transfer(secret):
            return self._read_file(path, timeout_s=timeout_s)

    def _read_file(self, path: str, *, timeout_s: float) -> bytes:
        target = device_path(path)
        self.exec(f"_civic_f = open({target!r}, 'rb')\nfrom binascii import b2a_base64 as _civic_e", timeout_s=timeout_s)
        out = bytearray()
        close = "_civic_f.close()\ndel _civic_f, _civic_e"
        try:
            while True:
                text = self.exec(f"print(_civic_e(_civic_f.read({READ_CHUNK})).decode(), end='')",
                                 timeout_s=timeout_s).strip()
                chunk = base64.b64decode(text) if text else b""
                if not chunk:
                    break
                out += chunk
        except BaseException as exc:
            self._close_after(exc, close, timeout_s)
            raise
        self.exec(close, timeout_s=timeout_s)
        return bytes(out)

    def _close_after(self, exc: BaseException, close: str, timeout_s: float) -> None:
        """Close the device file after ``exc`` interrupted a transfer, without hiding ``exc``.

        After Ctrl-C (KeyboardInterrupt) nothing more is sent: the exchange may be cut mid-command,
        and a failing clean-up raised in a ``finally`` would replace the interrupt by a link error
        that callers retry (a Ctrl-C during ``flash`` was lost that way). After a link error the
        clean-up is tried once and its own failure ignored.
        """
        if not isinstance(exc, Exception):
            return
        try:
            self.exec(close, timeout_s=timeout_s)
        except DutError as cleanup:
            log.debug("closing the device file after %s failed too: %s", type(exc).__name__, cleanup)

    def remove_file(self, path: str, *, timeout_s: float = 10.0) -> None:
        """Delete ``path`` on the device (missing is fine)."""
        self.exec(f"import os\ntry:\n    os.remove({device_path(path)!r})\nexcept OSError:\n    pass",
                  timeout_s=timeout_s)

    def make_dirs(self, dirs: Iterable[str], *, timeout_s: float = 10.0) -> None:
        """Create directories (parents first); existing ones are fine."""
        wanted = [device_path(d) for d in dirs]
        if wanted:
            self.exec(_MKDIRS_CODE.format(dirs=wanted), timeout_s=timeout_s)

    def sync_files(self, files: Mapping[str, bytes], *, timeout_s: float = 60.0, write_timeout_s: float | None = None,
                   dirs_timeout_s: float | None = None,
                   on_copied: Callable[[int, int], None] | None = None) -> SyncResult:
        """Make the device hold ``files`` (device path -> content), copying only what differs.

        Hashes are computed on the device (SHA-256 in 512-byte chunks), compared with the
        host's, and only missing or different files are written. ``on_copied(done, to_copy)`` is
        called once the differing files are known and after each one is written (for progress).
        ``timeout_s`` bounds the hashing exchange; ``write_timeout_s`` each write exchange (one chunk
        of a file) and ``dirs_timeout_s`` the directory creation, both ``timeout_s`` when None: a short
        write timeout notices a board that reset mid-copy within seconds.
        """
        wanted = {device_path(p): bytes(d) for p, d in files.items()}
        remote = self.hash_files(list(wanted), timeout_s=timeout_s)
        copied: list[str] = []
        unchanged: list[str] = []
        changed = {p: d for p, d in wanted.items() if remote.get(p) != hashlib.sha256(d).hexdigest()}
        self.make_dirs(parent_dirs(list(changed)), timeout_s=timeout_s if dirs_timeout_s is None else dirs_timeout_s)
        if on_copied is not None:
            on_copied(0, len(changed))
        for path, data in wanted.items():
            if path in changed:
                self.write_file(path, data, timeout_s=timeout_s if write_timeout_s is None else write_timeout_s)
                copied.append(path)
                if on_copied is not None:
                    on_copied(len(copied), len(changed))
            else:
                unchanged.append(path)
        log.info("synced %s: %d copied, %d unchanged", self.url, len(copied), len(unchanged))
        return SyncResult(tuple(copied), tuple(unchanged))


def _one_write_payload(code: str) -> bytes:
    """Ctrl-C, Ctrl-A, ``code``, Ctrl-D: stop, raw REPL, run ``code``, in one write."""
    return b"\r\x03\r\x01" + code.encode() + b"\x04"


def _open_cause(url: str, exc: BaseException) -> str:
    """mpremote hides the OS error behind "failed to access"; open once more to get it."""
    try:
        probe = serial.serial_for_url(url, timeout=0)
    except (OSError, ValueError) as inner:
        return str(inner)
    probe.close()
    return str(exc)
