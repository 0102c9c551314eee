"""``civicedge check``: what the board holds, and whether the gateway accepts its reports.

The gateway is watched either through its SQLite report store (read-only, on the gateway
host) or through its HTTP read API (``/api/devices/{id}``, ``last_seen``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from gateway.resources import policy_path
from gateway.storage.sqlite_uri import read_only_uri
from hil.dut import Dut
from hil.dut.errors import DutError
from hil.field.device import read_identity, read_text, with_retries
from hil.field.device_policy import POLICY_DEVICE_PATH
from hil.field.errors import FieldError, FirmwareStartError, NoReportError, NotProvisionedError
from hil.field.firmware_copy import expected_files, firmware_version, read_manifest, verify_manifest
from hil.field.identity import Identity
from hil.field.registration import gateway_error, unreachable_reason

log = logging.getLogger(__name__)

EPOCH_2000 = 946684800  # MicroPython ports whose time.time() counts from 2000
VALID_AFTER = 1704067200  # as firmware/lib/civic/hal/clock.py: an earlier clock was never set
DEFAULT_WINDOW_S = 900


@dataclass
class BoardState:
    """What ``check`` read from the board.

    Attributes:
        identity: the board's identity (``repr`` hides the key).
        version: firmware release from the board's manifest, or None if never flashed by us.
        mode: ``mpy`` or ``source``.
        changed: device paths whose hash differs from the manifest (tampered, corrupted, missing).
        outdated: firmware paths that differ from this host's firmware release.
    """

    identity: Identity
    version: str | None
    mode: str | None
    changed: list[str] = field(default_factory=list)
    outdated: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Firmware present, intact and of this release."""
        return self.version is not None and not self.changed and not self.outdated


def inspect_board(dut: Dut) -> BoardState:
    """Read identity, firmware manifest and on-device hashes.

    Raises:
        NotProvisionedError: the board has no ``/identity.json``.
    """
    identity = read_identity(dut)
    if identity is None:
        raise NotProvisionedError(f"the board on {dut.url} has no identity; run civicedge provision", port=dut.url)
    manifest = read_manifest(dut)
    if manifest is None:
        return BoardState(identity, None, None)
    files: dict[str, str] = {str(k): str(v) for k, v in manifest["files"].items()}
    mode = str(manifest.get("mode", "mpy"))
    state = BoardState(identity, str(manifest.get("version")), mode, changed=verify_manifest(dut, files))
    expected = expected_files(mode)
    state.outdated = sorted(p for p, h in expected.items() if files.get(p) != h)
    if POLICY_DEVICE_PATH in state.outdated and POLICY_DEVICE_PATH not in state.changed and _is_host_full_policy(
            dut, files.get(POLICY_DEVICE_PATH)):
        state.outdated.remove(POLICY_DEVICE_PATH)
    if manifest.get("version") != firmware_version():
        state.outdated = state.outdated or ["(version)"]
    return state


def _is_host_full_policy(dut: Dut, board_sha256: str | None) -> bool:
    """True when the board's ``/policy.json`` is, byte for byte, this host's ``firmware/policy.json``.

    An older ``flash`` wrote that file as it is; the firmware drops its documentation keys at load, so
    such a board runs this release's rules and is not on another policy. Only the exact file counts: a
    full file whose rules match but whose retention, purpose or valid range were edited states what the
    gateway does not do to an auditor reading the board, so it differs from this release (a flash
    replaces it). ``board_sha256`` is the manifest's hash, which the board's file was just checked against.
    """
    if board_sha256 is None:
        return False
    same = board_sha256 == hashlib.sha256(policy_path().read_bytes()).hexdigest()
    if same:
        log.info("the board on %s holds this host's full policy.json (an older flash wrote it); "
                 "a flash replaces it by the device copy", dut.url)
    return same


class GatewayWatch(Protocol):
    """Where ``check`` looks for the board's reports: :meth:`mark` what is stored, then poll."""

    def mark(self) -> None:
        """Remember what the gateway holds from the device now (before the firmware restarts)."""

    def new_report(self) -> dict[str, Any] | None:
        """A report accepted since :meth:`mark`, or None."""


class DbWatch:
    """Watches the gateway's SQLite report store (read-only): rows added after :meth:`mark`.

    Rows are compared by their ``id`` (the store's insert order), so neither clock matters and a
    report the firmware stored before it was stopped and re-sends (same ``seq``) does not count.
    """

    def __init__(self, db_path: Path, device_id: str) -> None:
        self.db_path = db_path
        self.device_id = device_id
        self.before = 0

    def mark(self) -> None:
        """See :meth:`GatewayWatch.mark`."""
        row = self._query("SELECT COALESCE(MAX(id), 0) AS id FROM reports WHERE device = ?", (self.device_id,))
        self.before = int(row["id"]) if row is not None else 0

    def new_report(self) -> dict[str, Any] | None:
        """See :meth:`GatewayWatch.new_report`."""
        return self._query("SELECT * FROM reports WHERE device = ? AND id > ? ORDER BY id LIMIT 1",
                           (self.device_id, self.before))

    def _query(self, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
        check_store_path(self.db_path)
        try:
            conn = sqlite3.connect(read_only_uri(self.db_path), uri=True, timeout=5)
        except sqlite3.Error as exc:
            raise FieldError(f"cannot open the gateway store {self.db_path}: {exc}", db=str(self.db_path)) from exc
        conn.row_factory = sqlite3.Row
        try:
            row = conn.execute(sql, params).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None  # the gateway has not created its schema yet
            raise FieldError(f"cannot read the gateway store {self.db_path}: {exc}", db=str(self.db_path)) from exc
        except sqlite3.DatabaseError as exc:
            raise FieldError(f"cannot read the gateway store {self.db_path}: {exc}", db=str(self.db_path)) from exc
        finally:
            conn.close()
        return None if row is None else dict(row)


def check_store_path(db_path: Path) -> None:
    """Refuse a ``--db`` that is not a readable file, in one line naming the fix.

    A mistyped path must fail at once: waiting a whole report window for rows that can never
    appear would end in blaming the link.

    Raises:
        FieldError: the path does not exist, is not a file, or cannot be reached or read.
    """
    hint = "pass the gateway's SQLite report store (the [storage] path of the gateway config)"
    try:
        if not db_path.exists():
            raise FieldError(f"the gateway store {db_path} does not exist; {hint}", db=str(db_path))
        if not db_path.is_file():
            raise FieldError(f"the gateway store {db_path} is not a file; {hint}", db=str(db_path))
        with db_path.open("rb"):
            pass
    except OSError as exc:
        raise FieldError(f"cannot read the gateway store {db_path}: {exc.strerror or exc}; run check as a user "
                         "who may read it (e.g. the gateway's user), or fix the permissions", db=str(db_path)) from None


class HttpWatch:
    """Watches the gateway's read API: the device's ``last_seen`` moving past its value at :meth:`mark`."""

    def __init__(self, base_url: str, device_id: str) -> None:
        self.base_url = base_url
        self.device_id = device_id
        self.before: int | None = None

    def mark(self) -> None:
        """See :meth:`GatewayWatch.mark`."""
        self.before = self._last_seen(self._fetch())

    def new_report(self) -> dict[str, Any] | None:
        """See :meth:`GatewayWatch.new_report`."""
        doc = self._fetch()
        seen = self._last_seen(doc)
        return doc if seen is not None and (self.before is None or seen > self.before) else None

    @staticmethod
    def _last_seen(doc: dict[str, Any]) -> int | None:
        seen = doc.get("last_seen")
        return seen if isinstance(seen, int) else None

    def _fetch(self) -> dict[str, Any]:
        url = f"{self.base_url.rstrip('/')}/api/devices/{self.device_id}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - the gateway URL the user gave
                doc: Any = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            code = gateway_error(exc)[0] if exc.code == 404 else ""
            if code == "unknown_device":
                raise FieldError(f"the gateway at {self.base_url} does not know device {self.device_id}; "
                                 "provision it against this gateway's registry", device_id=self.device_id) from exc
            if exc.code == 404:
                # Not the gateway's "no such device": a wrong path prefix or another web server. A
                # healthy board must not be re-keyed for it.
                raise FieldError(f"{self.base_url} answered HTTP 404 for {url} and does not look like a civicedge "
                                 "gateway, or the URL has a path: give http(s)://HOST[:PORT]", url=url) from exc
            raise FieldError(f"gateway {url} answered HTTP {exc.code}", url=url) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FieldError(f"cannot reach the gateway at {self.base_url}: {unreachable_reason(exc)}", url=url) from exc
        return doc if isinstance(doc, dict) else {}


# The link test: check asks the restarted firmware for a boot report at once (protocol §2 ``boot``).
LINK_TEST_NAME = "linktest"  # as firmware civic.LINK_TEST: the request file in the board's flash root
LINK_TEST_PATH = "/" + LINK_TEST_NAME
_LINK_TEST_PROBE = "getattr(__import__('civic'), 'LINK_TEST', None)"
_LINK_TEST_WRITE = "with open(%r, 'w') as _civic_f:\n    _civic_f.write('check')\ndel _civic_f" % LINK_TEST_PATH


def supports_link_test(dut: Dut) -> bool | None:
    """Whether the board's firmware takes check's link-test request (it names it as ``civic.LINK_TEST``).

    An older firmware does not, and is never written one: it would not remove it, and a later firmware
    would find it at an unrelated start. Asked of the firmware the board runs (or would start), not of a
    version number, so a frozen image counts as what it is.

    Returns:
        True or False; None when the question got no answer (the link to the board failed, or the
        board raised an error, e.g. MemoryError): not known, which is not "older" (logged).
    """
    try:
        name: Any = with_retries(dut, lambda: dut.eval(_LINK_TEST_PROBE))
    except DutError as exc:
        log.warning("could not ask the firmware on %s whether it has a link test (%s)", dut.url, exc)
        return None
    return bool(name == LINK_TEST_NAME)


def request_link_test(dut: Dut) -> bool:
    """Write the one-shot link-test request, just before check restarts the firmware.

    The firmware removes it when it starts and answers it only at a soft reset (check's restart): a
    request whose restart never happens is dropped at the next other start. Returns False (logged) when it
    could not be written: check then waits for the report window, as for an older firmware.
    """
    try:
        with_retries(dut, lambda: dut.exec(_LINK_TEST_WRITE))
    except DutError as exc:
        log.warning("could not write the link-test request on %s (%s); waiting for the board's report window",
                    dut.url, exc)
        return False
    return True


def link_test_result(*, supported: bool | None, requested: bool, answer: str | None) -> str:
    """The ``link_test`` of check's ``--json`` record (docs/field.md): what came of the request.

    Args:
        supported: the firmware takes the request (:func:`supports_link_test`; None: not known).
        requested: the request was written (:func:`request_link_test`).
        answer: what the firmware said on its console (:attr:`ConsoleWatch.link_test`).
    """
    if requested:
        return answer or "unanswered"
    if supported is None:
        return "unknown"
    return "not_written" if supported else "unsupported"


# Console lines of firmware/boot.py and main.py that mean the firmware is not running.
_FATAL = ("civicedge: cannot start", "civicedge: boot.py error", "civicedge: safe mode",
          "civicedge: recovery", "civicedge: not provisioned")
_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b")
# firmware/main.py's line once the firmware runs: "civicedge: <kind> <id> running (<caps>)".
_RUNNING = re.compile(r"^civicedge: \S+ \S+ running\b")
# firmware/lib/civic/apps/runtime.py's answer to the link-test request.
_LINK_TEST_LINE = "civicedge: link test:"
_LINK_TEST_QUEUED = _LINK_TEST_LINE + " boot report queued"
# MicroPython's REPL prompts: on the simulator main() runs as a task after the prompt is printed,
# so its lines follow ``>>> `` on the same console line.
_PROMPT = re.compile(r"^(?:(?:>>>|\.\.\.)(?: |$))+")


class ConsoleWatch:
    """Scans the console output of a restarted firmware for the line that says it cannot run."""

    def __init__(self) -> None:
        self._buffer = ""
        self._traceback = False
        self.running = False  # the firmware said it runs ("civicedge: ... running")
        # its answer to the link-test request: "answered" (a boot report queued), "declined" (outbox
        # full, or the report failed), None (not seen)
        self.link_test: str | None = None

    def feed(self, data: bytes) -> str | None:
        """Add console output; return the first fatal line seen (complete lines only), else None."""
        self._buffer += data.decode(errors="replace")
        *lines, self._buffer = self._buffer.split("\n")
        for raw in lines:
            line = _PROMPT.sub("", raw.strip()).strip()
            if line.startswith(_FATAL):
                return line
            if _RUNNING.match(line):
                self.running = True
            elif line.startswith(_LINK_TEST_LINE):
                self.link_test = "answered" if line.startswith(_LINK_TEST_QUEUED) else "declined"
            if line.startswith("Traceback (most recent call last)"):
                self._traceback = True
            elif self._traceback and _EXC_LINE.match(line):
                return f"firmware crashed: {line}"
        return None


def wait_new_report(watch: GatewayWatch, *, device_id: str, timeout_s: float,
                    console: Callable[[float], bytes] | None = None, poll_s: float = 0.5,
                    scan: ConsoleWatch | None = None) -> dict[str, Any]:
    """Poll ``watch`` until a report accepted after its :meth:`~GatewayWatch.mark` shows up.

    Args:
        watch: the gateway, marked before the firmware was restarted.
        device_id: for messages.
        timeout_s: how long to wait.
        console: reads the board's console for up to the given seconds (None: sleep instead).
        poll_s: time between polls.
        scan: reads the console lines (the caller's, to see what else the firmware said); None: a new one.

    Raises:
        FirmwareStartError: the console said the firmware cannot start (or it crashed).
        NoReportError: nothing within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    scan = scan if scan is not None else ConsoleWatch()
    while True:
        found = watch.new_report()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise NoReportError(
                f"the gateway accepted no report from {device_id} within {timeout_s:g} s; check the link "
                "(UART cable / BLE range), that the gateway runs, and its log for rejected frames (hmac, "
                f"unknown_device, or seq_reused: '{device_id} seq ... already stored with another frame', the "
                "board's seq counter restarted under an id with stored reports; the fix that line names: "
                f"civicedge provision --port PORT --id {device_id} ... --seq-start N, or with --gateway URL / --db "
                "PATH, which read N themselves; no --force needed)",
                device_id=device_id, timeout_s=timeout_s)
        if console is None:
            time.sleep(poll_s)
            continue
        fatal = scan.feed(console(poll_s))
        if fatal is not None:
            raise FirmwareStartError(f"the firmware of {device_id} does not run; its console says: {fatal!s}",
                                     device_id=device_id, console=fatal)


# Reports wait for the window to close (a bin also for its next wake), then for the link.
REPORT_MARGIN_S = 60


@dataclass(frozen=True)
class ReportDue:
    """When the board's next periodic report is due, as the board's own clock tells it.

    Attributes:
        wait_s: seconds to wait for it (window close + margin).
        due_unix: board time of the window close, or None when its clock is not set yet.
    """

    wait_s: float
    due_unix: int | None


def next_report_due(*, board_unix: int | None, window_s: int, interval_s: int) -> ReportDue:
    """How long a freshly restarted board may take to send its next periodic report.

    Args:
        board_unix: the board's clock in unix seconds, or None when it was never set.
        window_s: the kind's report window (reports are sent when a window closes).
        interval_s: the board's sensing / wake interval (a sleeping bin reports at its next wake).
    """
    margin = REPORT_MARGIN_S + interval_s
    if board_unix is None or board_unix < VALID_AFTER:
        # The gateway sets the clock at the first exchange; the window that began before that
        # is not reported, the next whole one is.
        return ReportDue(float(2 * window_s + margin), None)
    due = (board_unix // window_s + 1) * window_s
    return ReportDue(float(due - board_unix + margin), due)


_CLOCK_CODE = "import time\nprint(repr((int(time.time()), time.gmtime(0)[0])))\n"


def read_report_due(dut: Dut, kind: str, config: dict[str, Any] | None) -> ReportDue:
    """:func:`next_report_due` for the open board (its clock, its policy's window, its interval)."""
    try:
        now, epoch_year = with_retries(dut, lambda: dut.eval_code(_CLOCK_CODE))
        board_unix: int | None = int(now) + (0 if int(epoch_year) == 1970 else EPOCH_2000)
    except (DutError, ValueError, TypeError):
        board_unix = None
    window_s = DEFAULT_WINDOW_S
    try:
        # the device copy keeps window_s (only documentation is left out of it)
        policy: Any = json.loads(read_text(dut, POLICY_DEVICE_PATH) or "{}")
        spec = policy.get("kinds", {}).get(kind, {})
        window_s = int(spec.get("window_s", policy.get("defaults", {}).get("window_s", DEFAULT_WINDOW_S)))
    except (ValueError, TypeError, AttributeError):
        pass
    interval = (config or {}).get("sleep", {}).get("interval_s", 0)
    return next_report_due(board_unix=board_unix, window_s=max(1, window_s),
                           interval_s=interval if isinstance(interval, int) else 0)
