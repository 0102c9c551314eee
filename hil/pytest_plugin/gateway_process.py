"""A real ``civicedge gateway run`` process on a temporary config, for HIL tests.

The boards under test are registered in the gateway's registry (their generated keys) before
it starts; their UART data links become ``[[serial]]`` ports and BLE goes through the virtual
radio when one is given.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from hil.backends.errors import BackendError
from hil.children import spawn_child
from hil.pytest_plugin.ports import PortRange, free_ports, port_free, range_exhausted_message

# Annotations only: hil.backends.board drives boards through hil.dut (mpremote, the field extra), which
# the plugin does not import when pytest loads it.
if TYPE_CHECKING:
    from hil.backends.board import BoardHandle

log = logging.getLogger(__name__)

READY = re.compile(r"gateway (\S+) ready(?: http=(\d+))?")
TEST_LICENCE = "CC0-1.0"
"""The ``[opendata] licence`` of the test gateway's config (any valid one would do)."""
DEFAULT_BLE_AUTH_TIMEOUT_S = 20.0
"""The gateway's ``[ble] auth_timeout_s`` default (wall seconds; gateway.config.model.BleConfig)."""
MAX_BLE_AUTH_TIMEOUT_S = 600.0
"""The largest ``[ble] auth_timeout_s`` the gateway's config takes."""
STOP_ON_FAILED_START_S = 5.0
"""How long a gateway whose start failed or was interrupted gets to stop on SIGTERM before it is killed."""
PORT_TRIES = 10
"""Gateway starts on ports of a ``port_range`` that another process took after the probe, before giving up."""


class GatewayStartError(BackendError):
    """The gateway process exited or did not report ready in time.

    Attributes:
        returncode: exit status, or None if it was still running.
        output: what it printed.
    """

    def __init__(self, message: str, *, returncode: int | None, output: str) -> None:
        # No output section when it printed nothing (e.g. no port was free, so it never ran).
        text = f"{message}\n--- gateway output ---\n{output[-3000:]}" if output.strip() else message
        super().__init__(text, returncode=returncode)
        self.returncode = returncode
        self.output = output


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class GatewayProcess:
    """One gateway process.

    Attributes:
        workdir: directory holding config, registry and store.
        serial_ports: data-link URLs it reads (the boards' UART ptys, or a QEMU board's socket://HOST:PORT).
        radio_url: virtual BLE radio URL, or None for no BLE.
        http: serve the HTTP API/dashboard on a free port.
        admin_token: when set (with ``http``), the admin API is enabled with this token, written to
            :attr:`admin_token_path` (0600).
        failure_hint: called with ``device_id`` when :meth:`wait_for_reports` fails; the text it
            returns (the likely cause, e.g. :func:`hil.pytest_plugin.hints.deep_sleep_hint`) ends the
            error message and is its ``hint`` detail; None: no hint.
        port_range: the ports the HTTP server may listen on (``--hil-port-range``); None: any free
            port, which the gateway binds itself.
        ble_auth_timeout_s: the config's ``[ble] auth_timeout_s`` (wall seconds a BLE link may go without a
            verified frame); None: the gateway's default (:data:`DEFAULT_BLE_AUTH_TIMEOUT_S`).
        session_ports: ports of :attr:`port_range` the test session's other servers hold (port -> what, e.g.
            the virtual radio), named when no port of the range is free for the HTTP server.
    """

    workdir: Path
    serial_ports: list[str] = field(default_factory=list)
    radio_url: str | None = None
    http: bool = True
    gateway_id: str = "gw-hil"
    proc: subprocess.Popen[str] | None = field(default=None, repr=False)
    http_port: int | None = None
    admin_token: str | None = field(default=None, repr=False)
    failure_hint: Callable[[str | None], str | None] | None = field(default=None, repr=False)
    port_range: PortRange | None = None
    ble_auth_timeout_s: float | None = None
    session_ports: dict[int, str] = field(default_factory=dict, repr=False)
    _output: list[str] = field(default_factory=list, repr=False)
    _reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        """The TOML config file."""
        return self.workdir / "gateway.toml"

    @property
    def registry_dir(self) -> Path:
        """The device registry directory."""
        return self.workdir / "registry"

    @property
    def admin_token_path(self) -> Path:
        """The admin token file (written when :attr:`admin_token` is set)."""
        return self.workdir / "admin.token"

    @property
    def log_path(self) -> Path:
        """Everything the process printed, over all its starts (``gateway.log`` in :attr:`workdir`)."""
        return self.workdir / "gateway.log"

    @property
    def db_path(self) -> Path:
        """The SQLite report store."""
        return self.workdir / "reports.sqlite"

    @property
    def output(self) -> str:
        """Everything the process printed so far."""
        return "".join(self._output)

    def register(self, board: BoardHandle) -> None:
        """Add a board's identity and key to the registry (before or while running)."""
        from gateway.registry import Registry

        ident = board.identity
        registry = Registry(self.registry_dir)
        try:
            if registry.lookup(ident["id"]) is None:
                registry.add(ident["id"], kind=ident["kind"], zone=ident["zone"], lat=ident["lat"],
                             lon=ident["lon"], key=board.key)
        finally:
            registry.close()

    def write_config(self) -> None:
        """Write the gateway TOML for the current ports/radio."""
        lines = ["[gateway]", f"id = {_toml_str(self.gateway_id)}", f"data_dir = {_toml_str(str(self.workdir))}",
                 "", "[registry]", f"path = {_toml_str(str(self.registry_dir))}",
                 "", "[storage]", f"path = {_toml_str(str(self.db_path))}", "batch_ms = 20", "",
                 # A licence, so the gateway's "[opendata] licence is not set" WARNING does not open every
                 # failed test's gateway log: a test gateway publishes nothing.
                 "[opendata]", f"licence = {_toml_str(TEST_LICENCE)}", ""]
        for port in self.serial_ports:
            lines += ["[[serial]]", f"port = {_toml_str(port)}", ""]
        if self.radio_url is not None:
            lines += ["[ble]", "enabled = true", 'backend = "virtual"', f"radio = {_toml_str(self.radio_url)}"]
            if self.ble_auth_timeout_s is not None:
                lines.append(f"auth_timeout_s = {self.ble_auth_timeout_s:.1f}")
            lines.append("")
        if self.http:
            # Port 0 at the first start: the gateway binds a free port itself and names it in its ready
            # line (a port probed free here could be taken by a parallel test worker before the gateway
            # binds it). A restart asks for the same port again, so URLs a test holds stay valid.
            lines += ["[http]", "enabled = true", 'listen = "127.0.0.1"', f"port = {self.http_port or 0}"]
            if self.admin_token is not None:
                lines.append(f"admin_token_file = {_toml_str(str(self.admin_token_path))}")
            lines.append("")
        else:
            lines += ["[http]", "enabled = false", ""]
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.http and self.admin_token is not None:
            fd = os.open(self.admin_token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(self.admin_token + "\n")
        self.config_path.write_text("\n".join(lines))

    def start(self, *, timeout_s: float = 30.0) -> None:
        """Start ``civicedge gateway run`` and wait for its ready line.

        With :attr:`port_range` and no port yet, the HTTP server gets the first port of the range
        that is free (:mod:`hil.pytest_plugin.ports`); a port taken by another process between the
        probe and the gateway's bind is skipped (at most :data:`PORT_TRIES` starts).

        Raises:
            GatewayStartError: it exited or was not ready within ``timeout_s``, or no port of
                :attr:`port_range` was free.
        """
        if not self.http or self.http_port is not None or self.port_range is None:
            self._start(timeout_s=timeout_s)
            return
        tries = 0
        for port in free_ports(self.port_range):
            self.http_port = port
            try:
                self._start(timeout_s=timeout_s)
                return
            except GatewayStartError as exc:
                self.http_port = None
                tries += 1
                # Exited at start with the port taken now: another process bound it after the probe.
                if exc.returncode is None or port_free(port) or tries >= PORT_TRIES:
                    raise
                log.info("port %d was taken before the gateway bound it; trying another", port)
        raise GatewayStartError(range_exhausted_message(self.port_range, "the gateway's HTTP server",
                                                        self.session_ports), returncode=None, output="")

    def _start(self, *, timeout_s: float) -> None:
        self.write_config()
        cmd = [sys.executable, "-m", "hil.cli.main", "gateway", "run", "--config", str(self.config_path)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._output = []
        # Ends with pytest, even on SIGKILL (hil.children): no orphan retrying the boards' ptys.
        self.proc = spawn_child(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        ready = threading.Event()
        # Appended: a restart adds to the log of the earlier starts.
        log_file = self.log_path.open("a", encoding="utf-8", errors="replace")

        def pump(stream: Any) -> None:
            try:
                for line in stream:
                    self._output.append(line)
                    log_file.write(line)
                    log_file.flush()
                    match = READY.search(line)
                    if match and not ready.is_set():
                        if match.group(2):
                            self.http_port = int(match.group(2))
                        ready.set()
            finally:
                log_file.close()

        try:
            self._reader = threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True)
            self._reader.start()
            self._wait_ready(ready, timeout_s=timeout_s)
        except BaseException:
            # Anything, a Ctrl-C (KeyboardInterrupt) included: the child this call started must not outlive it
            # (the fixture's teardown never sees a gateway whose start raised).
            self.stop(timeout_s=STOP_ON_FAILED_START_S)
            raise
        log.info("gateway up (config %s)", self.config_path)

    def _wait_ready(self, ready: threading.Event, *, timeout_s: float) -> None:
        """Wait until the reader saw the ready line; raise when the child exited or ``timeout_s`` passed."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.05):
            if self.proc.poll() is not None:
                if self._reader is not None:
                    self._reader.join(2)
                code = self.proc.returncode
                self.stop()  # reaped already: closes its pipe
                raise GatewayStartError("gateway exited at start", returncode=code, output=self.output)
            if time.monotonic() > deadline:
                raise GatewayStartError(f"gateway not ready within {timeout_s:g} s", returncode=None,
                                        output=self.output)

    def stop(self, *, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (clean drain), then SIGKILL if needed; returns the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _kill_session(proc)
            except BaseException:
                _kill_session(proc)  # a second Ctrl-C during the clean stop: no drain, but no orphan either
                raise
        if self._reader is not None:
            self._reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def restart(self, *, timeout_s: float = 30.0) -> None:
        """Stop and start again on the same store and registry."""
        self.stop()
        self.start(timeout_s=timeout_s)

    def stored_reports(self, device_id: str | None = None) -> list[dict[str, Any]]:
        """The reports the gateway stored (of ``device_id``, else of every board), by device and seq.

        One dict per row of the store's ``reports`` table (read-only SQLite connection), keyed by its
        columns (docs/hil.md "Report rows"): ``device`` (the device id), ``seq``, ``kind``, ``zone``,
        ``type``, ``w``, ``l``, ``fw``, ``received_at``, ``gateway_id``, ``link``, ``digest``, ``id``,
        with the JSON columns decoded: ``m`` (field -> int), ``e`` (field -> milli-epsilon spent) and
        ``a`` (alarm codes).
        """
        if not self.db_path.exists():
            return []
        from gateway.storage.sqlite_uri import read_only_uri  # here: gateway.storage is slow to import at plugin load

        conn = sqlite3.connect(read_only_uri(self.db_path), uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            sql = "SELECT * FROM reports" + (" WHERE device = ?" if device_id else "") + " ORDER BY device, seq"
            rows = conn.execute(sql, (device_id,) if device_id else ()).fetchall()
        except sqlite3.OperationalError:
            return []  # schema not created yet
        finally:
            conn.close()
        return [decode_report_row(dict(r)) for r in rows]

    def wait_for_reports(self, *, count: int = 1, device_id: str | None = None,
                         timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` reports are stored (of ``device_id``, else of any board).

        Returns:
            All the reports stored by then, as :meth:`stored_reports` gives them (possibly more than ``count``).

        Raises:
            ValueError: ``count`` is not a whole number >= 1 (a wait for nothing would pass a test that
                checks nothing).
            BackendError: ``device_id`` is not in this gateway's registry (at once, naming the registered
                ids: its reports can never be stored), or fewer arrived within ``timeout_s`` (shows the
                gateway output).
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"wait_for_reports(count=...): count must be a whole number >= 1 (the reports to wait "
                             f"for), not {count!r}; to look at what is stored without waiting, use stored_reports()")
        if device_id is not None:
            self._check_registered(device_id)
        deadline = time.monotonic() + timeout_s
        while True:
            rows = self.stored_reports(device_id)
            if len(rows) >= count:
                return rows
            if time.monotonic() > deadline:
                message = (f"{len(rows)} of {count} reports stored after {timeout_s:g} s\n"
                           f"--- gateway output (whole log: {self.log_path}) ---\n{self.output[-2000:]}")
                hint = self.failure_hint(device_id) if self.failure_hint is not None else None
                if hint is None:
                    raise BackendError(message, count=len(rows))
                raise BackendError(f"{message}\n{hint}", count=len(rows), hint=hint)
            time.sleep(0.2)

    def registered_ids(self) -> list[str]:
        """The device ids in this gateway's registry, sorted (the boards :meth:`register` added, and any other)."""
        if not (self.registry_dir / "devices.sqlite").exists():
            return []
        from gateway.registry import Registry

        registry = Registry(self.registry_dir, create=False)  # a reader: the running gateway's files stay as they are
        try:
            return [record.id for record in registry.list()]
        finally:
            registry.close()

    def _check_registered(self, device_id: str) -> None:
        """Raise at once when the gateway's registry has no record of ``device_id`` (nor its store reports of it):
        waiting for its reports could only time out. No registry yet (never started, nothing registered): nothing
        to check against."""
        if not self.registry_dir.exists():
            return
        known = self.registered_ids()
        if device_id in known or self.stored_reports(device_id):
            return
        close = difflib.get_close_matches(device_id, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = ", ".join(known) if known else "none"
        raise BackendError(f"wait_for_reports: device {device_id!r} is not registered with this gateway, so no "
                           f"report of it can be stored{hint}; registered: {listed} (a board's id is "
                           "hil_board.device_id)", device_id=device_id, registered=known)


def _kill_session(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the child's whole session (spawn_child started it in its own) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


REPORT_JSON_COLUMNS: tuple[str, ...] = ("m", "e", "a")
"""Columns of the store's ``reports`` table that hold JSON text (gateway/storage/schema.py)."""


def decode_report_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its JSON columns (:data:`REPORT_JSON_COLUMNS`) decoded: ``m`` and ``e`` to dicts,
    ``a`` to a list (a value that is not text, e.g. NULL, is left as it is)."""
    for column in REPORT_JSON_COLUMNS:
        if isinstance(row.get(column), str):
            row[column] = json.loads(row[column])
    return row


def reads_over_ble(board: BoardHandle, link: str | None = None) -> bool:
    """Whether a gateway wired by :func:`gateway_for` reads ``board`` over BLE: a board on the radio (its
    ``ble_address`` set) when ``link`` is ``"ble"`` or it has no UART data link; with ``link`` None or
    ``"uart"`` a board with both links is read over its UART."""
    return bool(board.ble_address) and (link == "ble" or board.data_url is None)


def gateway_for(boards: Sequence[BoardHandle], *, workdir: Path, radio_url: str | None,
                port_range: PortRange | None = None, link: str | None = None) -> GatewayProcess:
    """A gateway wired to ``boards``: UART boards as serial ports, BLE-only boards over the radio; with
    ``link="ble"`` every board on the radio over BLE, its UART left unread (a board with both links sends
    over BLE once its UART goes unanswered); its HTTP server on a port of ``port_range`` (None: any free port);
    its BLE auth timeout long enough for sped-up virtual boards (:func:`ble_auth_timeout_for`)."""
    ports = [b.data_url for b in boards if b.data_url and not reads_over_ble(b, link)]
    needs_ble = any(reads_over_ble(b, link) for b in boards)
    gw = GatewayProcess(workdir=workdir, serial_ports=[p for p in ports if p],
                        radio_url=radio_url if needs_ble else None, port_range=port_range,
                        ble_auth_timeout_s=ble_auth_timeout_for([b for b in boards if reads_over_ble(b, link)]))
    for board in boards:
        gw.register(board)
    return gw


def ble_auth_timeout_for(ble_boards: Sequence[BoardHandle]) -> float | None:
    """The ``[ble] auth_timeout_s`` for a gateway reading ``ble_boards`` over the radio, or None for the default.

    A board on the radio advertises while it has nothing to send, and the gateway connects at once; its first
    report comes when a report window of the board's clock closes, up to one window (900 s) after boot. The
    gateway times ``auth_timeout_s`` in wall seconds (also under ``[sim_clock]``): at sim speed 30 a window is
    30 wall seconds, longer than the default 20, so the link was dropped as unverified in about one run in three
    (depending on the time of day the board booted at), then not retried for the 30-s reconnect pause. A virtual
    board at a known speed gets one report window of wall time plus a margin (at most
    :data:`MAX_BLE_AUTH_TIMEOUT_S`); speed 0, a paused clock, and other backends keep the default.
    """
    from hil.pytest_plugin.hints import report_window_s

    longest: float | None = None
    for board in ble_boards:
        speed = board.extras.get("sim_speed") if board.backend == "sim" else None
        if isinstance(speed, (int, float)) and not isinstance(speed, bool) and speed > 0:
            wall_s = report_window_s(board) / speed + DEFAULT_BLE_AUTH_TIMEOUT_S
            longest = wall_s if longest is None else max(longest, wall_s)
    return None if longest is None else min(longest, MAX_BLE_AUTH_TIMEOUT_S)
