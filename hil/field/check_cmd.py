"""``civicedge check``: read a board back, restart its firmware and wait for its first accepted report.

Every failure ends with one ``error:`` line saying what to do, and exit status 2 (bad input, board,
port or gateway) or 1 (the check found a problem).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from hil.dut import Dut
from hil.errors import HilError
from hil.field.board_facts import read_board_facts
from hil.field.check import (
    ConsoleWatch, DbWatch, GatewayWatch, HttpWatch, check_store_path, inspect_board, link_test_result, read_report_due,
    request_link_test, supports_link_test, wait_new_report,
)
from hil.field.cli_common import EXIT_ERROR, EXIT_PROBLEM, errors, say, seconds, with_json
from hil.field.cli_steps import steps
from hil.field.device import count_outbox, open_board
from hil.field.errors import FieldError
from hil.field.firmware_copy import firmware_version
from hil.field.firmware_restart import console_reader, restart
from hil.field.ports import require_port
from hil.field.registration import registry_problem

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``check`` to the ``civicedge`` command line."""
    check = subparsers.add_parser(
        "check", help="read back a board and wait for its first accepted report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read a provisioned board back (identity, firmware files by hash, un-sent reports),\n"
                    "restart its firmware and wait until the gateway has accepted a report sent after\n"
                    "that restart, seen in the gateway's store (--db) or its HTTP API (--gateway): one\n"
                    "of the two is required. Exit 0: the board reports; 1: the check found a problem\n"
                    "(each is named, with what to do); 2: bad input, board, port or gateway.\n"
                    "\n"
                    "example:\n"
                    "  civicedge check --port /dev/ttyUSB0 --db /srv/civicedge/reports.sqlite \\\n"
                    "      --registry /srv/civicedge/registry")
    check.add_argument("--port", required=True, help="serial port of the board")
    check.add_argument("--registry", type=Path,
                       help="the gateway's registry directory: check the key registered there (default: not checked)")
    check.add_argument("--db", type=Path, help="the gateway's SQLite report store (read-only; this or --gateway)")
    check.add_argument("--gateway", help="gateway URL (HTTP read API; this or --db)")
    check.add_argument("--timeout", type=seconds, default=None,
                       help="seconds to wait for a report after the restart (default: until the board's next "
                            "report window closes, plus a margin)")
    check.add_argument("--repl-timeout", type=seconds, default=10.0,
                       help="seconds to wait for the REPL (default: %(default)g)")
    check.add_argument("--json", action="store_true",
                       help="print one JSON object on stdout (id, port, fingerprint, result: ok, problem or error, "
                            "problems, ...; the progress and messages go to stderr), for batch scripts")
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    return with_json(args, _run_check)


def _run_check(args: argparse.Namespace, out: Console, record: dict[str, Any]) -> int:
    with errors(record):
        require_port(args.port)
        if args.gateway is None and args.db is None:
            raise FieldError("tell check where the gateway is: --db PATH (its SQLite store) or --gateway URL")
        if args.db is not None:
            check_store_path(args.db)  # a mistyped --db fails now, not after a whole report window
        try:
            dut = open_board(args.port, timeout_s=args.repl_timeout)
        except KeyboardInterrupt:
            say("interrupted while connecting to the board: nothing was changed on it; its firmware may "
                "have been stopped (it restarts by itself within 10 minutes, or press RESET)")
            raise
        restarted = False

        def restart_once() -> None:
            nonlocal restarted
            restart(dut, args.repl_timeout)
            restarted = True

        try:
            return _check_board(out, dut, args, restart_once, record)
        except KeyboardInterrupt:
            if not restarted:  # the finally below gives the board its firmware back
                say("interrupted while reading the board: nothing was changed on it; its firmware is "
                    "restarted now")
            raise
        finally:
            try:
                if not restarted:
                    # Something failed before the restart (a mistyped --registry or --db, a link error):
                    # give the board its firmware back instead of leaving a street light stopped.
                    try:
                        restart(dut, args.repl_timeout)
                    except HilError as exc:
                        log.warning("could not restart the firmware on %s: %s", args.port, exc)
            finally:
                dut.close()  # a Ctrl-C during that restart too: an open port stays locked
    return EXIT_ERROR


def _check_board(out: Console, dut: Dut, args: argparse.Namespace, restart: Callable[[], None],
                 record: dict[str, Any]) -> int:
    """Read the board back, restart its firmware (``restart``) and wait for a report sent after it."""
    state = inspect_board(dut)
    facts = read_board_facts(dut)
    ident = state.identity
    record.update(id=ident.id, fingerprint=ident.fingerprint, kind=ident.kind, zone=ident.zone, lat=ident.lat,
                  lon=ident.lon, firmware=state.version)
    out.print(f"board {ident.id} ({ident.kind}) zone {ident.zone} at {ident.lat},{ident.lon} key {ident.fingerprint}")
    problems: list[str] = []
    if state.version is None:
        out.print("firmware: no /firmware.json (not flashed with civicedge flash, or the flash was interrupted)")
    else:
        out.print(f"firmware: {state.version} ({state.mode}); "
                  f"{'hashes match' if not state.changed else 'CHANGED: ' + ', '.join(state.changed)}"
                  f"{'' if not state.outdated else '; differs from this release: ' + ', '.join(state.outdated)}")
    unsent = count_outbox(dut)
    out.print(f"outbox: {unsent} un-sent report(s)" + (" (sent once the gateway accepts the board's reports)"
                                                      if unsent else ""))
    # Echoed arguments are shell-quoted: the command must paste as is (a port path with a space or quote).
    port = shlex.quote(args.port)
    flash_cmd = shlex.join(["civicedge", "flash", "--firmware-only", "--board", facts.config_name or "BOARD",
                            "--port", args.port])
    if state.version is None or state.changed:
        # Missing or damaged files: the firmware cannot be trusted to start, waiting tells nothing.
        problems.append(f"the firmware on the board is incomplete or damaged; run {flash_cmd}")
    if facts.config_kind is not None and facts.config_kind != ident.kind:
        problems.append(f"the board is provisioned as a {ident.kind} but its /board.json is for a "
                        f"{facts.config_kind}: its firmware will not start; run civicedge flash --firmware-only "
                        f"--board (a {ident.kind} board definition) --port {port}")
    config_chip = (facts.config or {}).get("chip")
    if facts.chip_source == "MicroPython" and isinstance(config_chip, str) and config_chip != facts.chip:
        problems.append(f"the board is an {facts.chip} (MicroPython reports {facts.machine!r}) but its "
                        f"/board.json is for an {config_chip}; run civicedge flash --firmware-only --board (a definition "
                        f"for this chip) --port {port}")
    if args.registry is not None:
        # A registry that does not hold this key makes the gateway refuse every report: waiting
        # (up to a whole report window) would only end in "check the link".
        status, registry_issue = registry_problem(args.registry, ident, port=args.port, unsent=unsent)
        out.print(status)
        if registry_issue is not None:
            problems.append(registry_issue)
    record.update(unsent=unsent, problems=problems)
    if problems:
        for problem in problems:
            out.print(f"problem: {problem}")
        record["result"] = "problem"
        restart()  # back to what it did before check stopped it
        return EXIT_PROBLEM
    watch: GatewayWatch = DbWatch(args.db, ident.id) if args.db is not None else HttpWatch(args.gateway, ident.id)
    # The link test: the firmware sends a boot report at check's restart instead of at its next window
    # close. The wait stays as long as the window's: a boot report that does not come is waited for as before.
    support = supports_link_test(dut)
    link_test = support is True
    if args.timeout is not None:
        timeout_s = float(args.timeout)
    else:
        due = read_report_due(dut, ident.kind, facts.config)
        timeout_s = due.wait_s
        when = ("the board's clock is not set yet: the gateway sets it, then a whole window must pass"
                if due.due_unix is None else "its window closes at "
                + datetime.fromtimestamp(due.due_unix, timezone.utc).strftime("%H:%M:%S UTC") + " (board clock)")
        if link_test:
            when = f"a boot report at once (link test); else {when}"
        out.print(f"next report due: {when}; waiting up to {timeout_s:.0f} s (--timeout to change)")
    if support is None:
        out.print("link test: check could not ask the board's firmware whether it has one (the board did not "
                  "answer; see the warning above), so it waits for the board's report window")
    elif not support:
        out.print("link test: the board's firmware has none (older than this release), so check waits for its "
                  f"report window; for an answer in seconds update it: {flash_cmd}")
    watch.mark()  # only a report accepted after this restart counts
    # Written just before the restart; a Ctrl-C in between still restarts (the finally of _run_check),
    # and the firmware takes the request at that restart.
    requested = link_test and request_link_test(dut)
    restart()
    started = time.monotonic()
    scan = ConsoleWatch()
    console = console_reader(dut)
    try:
        with steps(out) as step:
            step(f"wait for a new report of {ident.id} at the gateway")
            wait_new_report(watch, device_id=ident.id, timeout_s=timeout_s, console=console, scan=scan)
        if requested and scan.link_test is None:
            scan.feed(console(0.3))  # the firmware's line may come after the gateway stored the report
    except KeyboardInterrupt:
        say(f"interrupted: still waiting for a report of {ident.id}; nothing was changed on the board "
            f"(its firmware runs); re-run check to wait again ({time.monotonic() - started:.0f} s waited)")
        raise
    finally:
        record["link_test"] = link_test_result(supported=support, requested=requested, answer=scan.link_test)
    out.print(f"gateway accepted a report from {ident.id} ({time.monotonic() - started:.0f} s)")
    record.update(result="ok", report_after_s=round(time.monotonic() - started, 1))
    if state.outdated:
        # It runs and reports, but not this release: say why the exit code is not 0, and the way out.
        release = firmware_version()
        if state.version == release:
            files = [p for p in state.outdated if p != "(version)"]
            shown = ", ".join(files[:5]) + (" ..." if len(files) > 5 else "")
            out.print(f"problem: the board runs firmware {release} as this host, but {len(files)} of its files differ "
                      f"from this host's build of it ({shown}); to update it run {flash_cmd}")
        else:
            out.print(f"problem: the board runs firmware {state.version}, not this host's release {release}; "
                      f"to update it run {flash_cmd}")
        record.update(result="problem", problems=[f"firmware differs from this host's release {release}: "
                                                  + ", ".join(state.outdated)])
        return EXIT_PROBLEM
    return 0

