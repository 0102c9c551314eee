"""``civicedge flash`` / ``provision`` / ``check``: the two commands at the streetlight, and a check.

Every failure ends with one ``error:`` line saying what to do, and exit status 2 (bad input,
board, port or gateway) or 1 (the check found a problem). Keys are never printed: labels carry
the key fingerprint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.console import RenderableType
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from gateway.cli.devices_cmd import LOCATION_HELP_NOTE, accept_negative_location
from hil.boards import BoardError, list_boards, load_board
from hil.dut import Dut
from hil.errors import HilError
from hil.dut.errors import DutError
from hil.field.board_facts import check_definition_fits, read_board_config, read_board_facts
from hil.field.check import (
    ConsoleWatch, DbWatch, GatewayWatch, HttpWatch, check_store_path, inspect_board, link_test_result, read_report_due,
    request_link_test, supports_link_test, wait_new_report,
)
from hil.field.chips import chip_profile
from hil.field.device import BOARD_CONFIG_PATH, count_outbox, open_board, read_identity
from hil.field.errors import (
    BoardFullError, BoardNotAnsweringError, DamagedIdentityError, DeviceIOError, FieldError, FirmwareStartError,
    FirmwareVerifyError, GatewayRegistrationError, UnsentReportsError, PortBusyError, PortNotFoundError,
    PortPermissionError,
)
from hil.field.ports import check_port_available, require_port
from hil.field.esp_flash import FlashStep, execute_flash, plan_flash
from hil.field.firmware_copy import (
    copy_firmware, firmware_version, read_manifest, verify_manifest, write_board_config,
)
from hil.field.identity import Identity, parse_location, validate_fields
from hil.field.provision import ProvisionResult, provision_board
from hil.field.registration import AdminApiRegistrar, OldId, old_id_status, registry_problem, revoke_device

log = logging.getLogger(__name__)
EXIT_PROBLEM = 1
EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``flash``, ``provision`` and ``check`` to the ``civicedge`` command line."""
    flash = subparsers.add_parser("flash", help="flash MicroPython and the civicedge firmware onto a board")
    flash.add_argument("--board", required=True, help="board definition name (boards/<name>.toml) or path")
    flash.add_argument("--port", required=True, help="serial port of the board (e.g. /dev/ttyUSB0)")
    flash.add_argument("--micropython", type=Path,
                       help="MicroPython release image (.bin) for the chip (required unless --firmware-only)")
    flash.add_argument("--no-erase", action="store_true",
                       help="do not erase the flash before writing MicroPython (not with --firmware-only)")
    flash.add_argument("--firmware-only", action="store_true", help="skip esptool: MicroPython is already there")
    flash.add_argument("--source", action="store_true", help="copy .py sources instead of compiled .mpy")
    flash.add_argument("--repl-timeout", type=_seconds, default=20.0,
                       help="seconds to wait for the REPL (default: %(default)g)")
    flash.set_defaults(func=_flash, parser=flash)

    prov = subparsers.add_parser("provision", help="give a flashed board its identity and key, register it")
    prov.add_argument("--port", required=True, help="serial port of the board")
    prov.add_argument("--id", required=True, dest="device_id", help="device id, e.g. sl-0042")
    prov.add_argument("--zone", required=True, help="city zone, e.g. centre")
    prov.add_argument("--location", required=True, metavar="LAT,LON",
                      help="decimal degrees, e.g. 52.3702,4.8952" + LOCATION_HELP_NOTE)
    accept_negative_location(prov)
    prov.add_argument("--board", help="board definition (default: the kind in the board's /board.json)")
    where = prov.add_mutually_exclusive_group(required=True)
    where.add_argument("--registry", type=Path, help="the gateway's registry directory")
    where.add_argument("--gateway", help="gateway URL, e.g. http://gateway.local:8080: register through its admin API")
    prov.add_argument("--token-file", type=Path, help="the gateway's admin token file (with --gateway)")
    prov.add_argument("--force", action="store_true",
                      help="replace the identity this board already has (its own id gets a new key); refused while "
                           "the board's outbox holds un-sent reports (see --discard-unsent)")
    prov.add_argument("--discard-unsent", action="store_true",
                      help="with --force: re-key even though the board's outbox holds un-sent reports (framed "
                           "under its old key, the firmware drops them); default: refused, let the gateway drain "
                           "them first")
    prov.add_argument("--take-over", action="store_true",
                      help="take over an id the registry holds with another board's key (that board is refused "
                           "from then on)")
    prov.add_argument("--revoke-old", action="store_true",
                      help="with --force and --registry: when the board held another id before, revoke that id in "
                           "the registry once the new identity is written (only while the registry holds it with "
                           "the key the board had). Default: the old id stays registered and a warning says how "
                           "to revoke it")
    prov.add_argument("--skip-firmware-check", action="store_true",
                      help="provision even when the board's firmware is missing or differs from its /firmware.json "
                           "(default: refused; run civicedge flash first)")
    prov.add_argument("--stay-at-repl", action="store_true",
                      help="leave the board at the MicroPython REPL (default: restart its firmware, which then "
                           "runs with the new identity)")
    prov.add_argument("--repl-timeout", type=_seconds, default=10.0,
                      help="seconds to wait for the REPL (default: %(default)g)")
    prov.add_argument("--json", action="store_true",
                      help="print one JSON object on stdout (id, port, fingerprint, result, label, ...; the "
                           "progress and messages go to stderr), for batch scripts")
    prov.set_defaults(func=_provision, parser=prov)

    check = subparsers.add_parser("check", help="read back a board and wait for its first accepted report")
    check.add_argument("--port", required=True, help="serial port of the board")
    check.add_argument("--registry", type=Path, help="the gateway's registry directory: check the key registered there")
    check.add_argument("--db", type=Path, help="the gateway's SQLite report store (read-only)")
    check.add_argument("--gateway", help="gateway URL (HTTP read API)")
    check.add_argument("--timeout", type=_seconds, default=None,
                       help="seconds to wait for a report after the restart (default: until the board's next "
                            "report window closes, plus a margin)")
    check.add_argument("--repl-timeout", type=_seconds, default=10.0,
                       help="seconds to wait for the REPL (default: %(default)g)")
    check.add_argument("--json", action="store_true",
                       help="print one JSON object on stdout (id, port, fingerprint, result: ok, problem or error, "
                            "problems, ...; the progress and messages go to stderr), for batch scripts")
    check.set_defaults(func=_check)


def _seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


# --------------------------------------------------------------------------------------------- flash
def _flash(args: argparse.Namespace) -> int:
    out = Console(highlight=False, markup=False, soft_wrap=True)
    if args.firmware_only:
        # Options that only mean something to the esptool step would be silently ignored.
        for given, name in ((args.micropython is not None, "--micropython"), (args.no_erase, "--no-erase")):
            if given:
                args.parser.error(f"{name} does nothing with --firmware-only (MicroPython is not rewritten); "
                                  "drop one of them")
    with _errors(out):
        require_port(args.port)
        definition = load_board(args.board)
        chip = chip_profile(definition.chip)
        firmware_version()  # a VERSION the gateway would refuse stops here, before MicroPython is rewritten
        done = _FlashProgress()
        with _steps(out) as step, _interrupted(args, done):
            if not args.firmware_only:
                if args.micropython is None:
                    raise FieldError("--micropython IMAGE.bin is required unless --firmware-only is given")
                plan = plan_flash(port=args.port, chip=chip, image=args.micropython, erase=not args.no_erase)
                step(f"connect to the {chip.esptool_name} bootloader")

                def on_step(flash_step: FlashStep) -> None:
                    if flash_step.action == "erase":
                        done.erase_started = True
                    done.writing_started = True
                    step(flash_step.describe())

                execute_flash(plan, on_step=on_step)
            else:
                check_port_available(args.port)  # a port that cannot be opened fails now, not after the wait
            step("wait for the MicroPython REPL")
            dut = _open_retrying(args.port, timeout_s=args.repl_timeout, port_may_vanish=not args.firmware_only)
            copying = False

            def on_progress(name: str) -> None:
                nonlocal copying
                copying = copying or name.startswith("sync ")  # from here on files on the board change
                done.writing_started = done.writing_started or copying
                step(name)

            try:
                step("check the board")
                check_definition_fits(read_board_facts(dut), definition, port=args.port)
                try:
                    result = copy_firmware(dut, board_config=definition.to_device_config(), source_only=args.source,
                                           on_progress=on_progress, on_copied=step.count)
                except BoardFullError as exc:
                    raise BoardFullError(f"{exc}: {_flash_command(args)}", **exc.details) from None
            except BaseException as exc:
                _after_failed_flash(dut, args, copying=copying, interrupted=isinstance(exc, KeyboardInterrupt))
                raise
            try:
                identity, damaged = _identity_after_flash(dut)
                restarted, fatal = False, None
                if identity is not None:
                    # A provisioned board (a street light) must not stay dark at the REPL until its
                    # watchdog resets it: the new firmware runs with the identity it has.
                    restarted = _restart_step(dut, args.repl_timeout, step)
                    if restarted:
                        step("watch the firmware start")
                        fatal = _watch_start(dut, START_WATCH_S)
            finally:
                dut.close()
        out.print(f"flashed {definition.name} on {args.port}: firmware as {result.mode} "
                  f"(device .mpy v{result.device_mpy}), {len(result.copied)} files copied, "
                  f"{len(result.unchanged)} unchanged, all verified by hash")
        port = shlex.quote(args.port)
        if identity is not None and fatal is not None:
            raise FirmwareStartError(f"the new firmware on {args.port} does not run with the board's identity "
                                     f"{identity.id}; its console says: {fatal}", console=fatal, port=args.port)
        if identity is not None and restarted:
            out.print(f"firmware restarted as {identity.id} (zone {identity.zone}, key {identity.fingerprint}); "
                      f"next: civicedge check --port {port} (--db PATH | --gateway URL) [--registry DIR] waits for "
                      "its first accepted report")
        elif identity is not None:
            out.print(f"the firmware could not be restarted (press RESET); then: civicedge check --port {port} "
                      "(--db PATH | --gateway URL) [--registry DIR]")
        else:
            what = ("its /identity.json is damaged" if damaged else "it has no identity yet")
            force = " --force" if damaged else ""
            out.print(f"{what}: the board waits at the MicroPython REPL (its firmware does not run) until it is "
                      f"provisioned; next: civicedge provision --port {port} --id ID --zone ZONE --location LAT,LON "
                      f"(--registry DIR | --gateway URL --token-file FILE){force}")
        return 0
    return EXIT_ERROR


def _identity_after_flash(dut: Dut) -> tuple[Identity | None, bool]:
    """The board's identity after a flash, and whether its ``/identity.json`` is damaged."""
    try:
        return read_identity(dut), False
    except DamagedIdentityError:
        return None, True


def _after_failed_flash(dut: Dut, args: argparse.Namespace, *, copying: bool, interrupted: bool) -> None:
    """A refused or failed ``flash`` restarts the firmware it stopped, unless it left it incomplete.

    Before the copy started nothing on the board changed: the firmware runs again as before (a street
    light must not stay dark until its watchdog resets it). After, only firmware whose files still
    all match its ``/firmware.json`` is restarted; broken code is not started, and that is said. A dead
    link is noticed within seconds (not after the retries of a manifest check) and said as such: whether
    the firmware is whole cannot be told then.
    """
    intact = not copying
    unknown = False
    if copying and not interrupted:
        try:
            if not _link_answers(dut):
                raise DeviceIOError(f"no answer on {args.port}", port=args.port)
            manifest = read_manifest(dut)
            intact = manifest is not None and not verify_manifest(dut, {str(k): str(v) for k, v
                                                                       in manifest["files"].items()})
        except (HilError, KeyError) as exc:
            log.info("cannot tell whether the firmware on %s is intact: %s", args.port, exc)
            unknown = True
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if intact:
        _restart_quietly(dut, args)
    elif unknown:
        err.print(f"could not check the firmware on {args.port} (link lost), so it was not restarted; once the board "
                  f"answers again, re-run to repair it: {_flash_command(args)}", markup=False)
    elif not interrupted:  # an interruption says so itself (_interrupted)
        err.print(f"the firmware on {args.port} is incomplete, so it was not restarted (it would not start); "
                  f"re-run to repair it: {_flash_command(args)}", markup=False)


LINK_PROBE_S = 2.0  # how long a failed flash waits for the board to answer before it calls the link lost


def _link_answers(dut: Dut) -> bool:
    """True when the board's REPL answers within seconds (one fresh raw REPL allowed)."""
    for attempt in range(2):
        try:
            if attempt:
                dut.enter_raw_repl(timeout_s=LINK_PROBE_S)
            return bool(dut.eval("1", timeout_s=LINK_PROBE_S) == 1)
        except DutError as exc:
            log.info("board on %s does not answer (%s)", dut.url, exc)
    return False


def _restart_quietly(dut: Dut, args: argparse.Namespace) -> None:
    """Give a board the firmware back that this command stopped (nothing changed, or a failure)."""
    if getattr(args, "stay_at_repl", False):
        return
    try:
        _restart(dut, args.repl_timeout)
        log.info("firmware on %s restarted", args.port)
    except HilError as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"warning: could not restart the firmware: {exc}", markup=False)


# --------------------------------------------------------------------------------------------- provision
def _provision(args: argparse.Namespace) -> int:
    return _with_json(args, _run_provision)


def _run_provision(args: argparse.Namespace, out: Console, record: dict[str, Any]) -> int:
    if args.discard_unsent and not args.force:
        # Only a re-keying drops un-sent reports: alone, the option would be silently ignored.
        args.parser.error("--discard-unsent does nothing without --force (only replacing the board's identity "
                          "and key drops its un-sent reports); add --force or drop --discard-unsent")
    if args.revoke_old and not args.force:
        args.parser.error("--revoke-old does nothing without --force (only replacing the board's identity leaves "
                          "an old id behind); add --force or drop --revoke-old")
    if args.revoke_old and args.registry is None:
        args.parser.error("--revoke-old needs --registry DIR (it checks that the registry holds the old id with "
                          "the key the board had before revoking it); with --gateway, revoke the old id on the "
                          "gateway's host: civicedge gateway devices revoke OLD-ID")
    with _errors(out, record):
        require_port(args.port)
        lat, lon = parse_location(args.location)
        validate_fields(device_id=args.device_id, zone=args.zone)  # the registry's rules, before the port
        if float(lat) == 0 and float(lon) == 0:
            _say(
                f"warning: location {args.location} is 0,0 (in the sea off West Africa): what a GPS without a fix "
                "reports; check the pole's coordinates (a wrong location is corrected later with civicedge gateway "
                "devices move)")
        if args.board is not None:
            load_board(args.board)  # a bad definition fails now, not after the board was stopped
        registrar = None
        if args.gateway is not None:
            registrar = AdminApiRegistrar(args.gateway, _admin_token(args.token_file))
            if registrar.plain_http_remote:
                _say(
                    f"warning: the device key goes to {args.gateway} over plain HTTP; serve the gateway's "
                    "API over TLS (https://) when provisioning from another host")
        elif args.token_file is not None:
            raise GatewayRegistrationError("--token-file goes with --gateway URL (the admin API), not --registry")
        with _steps(out) as step:
            step("connect to the board")
            try:
                dut = open_board(args.port, timeout_s=args.repl_timeout)
            except KeyboardInterrupt:
                _say("interrupted while connecting to the board: nothing was written to it and nothing "
                                 "was registered; its firmware may have been stopped (it restarts by itself within "
                                 f"10 minutes, or press RESET); re-run: {_provision_command(args, repair=False)}")
                raise
            try:
                if args.board is not None:
                    step("check the board")
                    # Only the chip: provisioning gives the board a new identity of the definition's kind.
                    check_definition_fits(read_board_facts(dut), load_board(args.board), port=args.port,
                                          check_kind=False)
                kind = _board_kind(dut, args.board, args.port)
                board_name = _board_name(dut, args.board, kind)
                if not args.skip_firmware_check:
                    step("check the firmware")
                    _check_firmware_for_provision(dut, args)
                step("write identity and register")
                unsent = count_outbox(dut) if args.force else 0  # for the advice of a stopped re-keying
                registering = False

                def on_registering() -> None:
                    nonlocal registering
                    registering = True

                try:
                    result = provision_board(dut, device_id=args.device_id, kind=kind, zone=args.zone, lat=lat,
                                             lon=lon, registry_dir=args.registry, registrar=registrar,
                                             force=args.force, take_over=args.take_over,
                                             discard_unsent=args.discard_unsent, on_registering=on_registering)
                except UnsentReportsError as exc:
                    unsent = int(exc.details.get("unsent", 0))
                    raise UnsentReportsError(
                        f"the board on {args.port} holds {unsent} un-sent report(s) in its outbox, framed under its "
                        "current key: a new key makes the firmware drop them at its next boot; nothing was changed. "
                        "Connect it to the gateway and let them drain (civicedge check --port "
                        f"{shlex.quote(args.port)} --db PATH|--gateway URL shows how many are left), then re-run; or "
                        f"drop them: {_provision_command(args, repair=False, discard=True)}",
                        **exc.details) from None
                except DamagedIdentityError as exc:  # only without --force
                    raise DamagedIdentityError(
                        f"the board on {args.port} has a damaged /identity.json ({exc.details.get('reason')}); "
                        f"replace it with: {_provision_command(args, repair=False, force=True)}",
                        **exc.details) from None
                except (HilError, BoardError, KeyboardInterrupt) as exc:
                    _provision_stopped(args, registering, exc, unsent=unsent)
                    raise
                if args.board is not None:
                    step("write board config")
                    write_board_config(dut, load_board(args.board).to_device_config())
            except BaseException as exc:
                # Refused or failed: a street light must not stay dark at the REPL until its watchdog
                # resets it; it runs again as it was (or with what was written). Not firmware whose
                # files differ from its /firmware.json: that code is not started (as after a failed flash).
                if not (isinstance(exc, FieldError) and exc.details.get("firmware_damaged")):
                    _restart_quietly(dut, args)
                dut.close()
                raise
            restarted = False
            fatal: str | None = None
            interrupted = False
            try:
                if not args.stay_at_repl:
                    # A street light must not stay dark at the REPL until its watchdog resets it.
                    restarted = _restart_step(dut, args.repl_timeout, step)
                    if restarted:
                        step("watch the firmware start")
                        fatal = _watch_start(dut, START_WATCH_S)
            except KeyboardInterrupt:
                # The board is provisioned by now: its label must not be lost with the Ctrl-C.
                interrupted = True
            finally:
                dut.close()
        what = "written" if result.device_changed else "already on the board (unchanged)"
        out.print(f"identity {what}; registry: {result.registration.value}")
        out.print(f"LABEL: {result.label()}")
        old_status = _old_id(out, args, result)
        record.update(fingerprint=result.identity.fingerprint, kind=result.identity.kind, zone=result.identity.zone,
                      lat=result.identity.lat, lon=result.identity.lon, label=result.label(),
                      registry=result.registration.value, firmware_restarted=restarted and fatal is None,
                      result="provisioned" if result.device_changed else "unchanged")
        if result.replaced is not None and result.replaced.id != result.identity.id:
            record.update(old_id=result.replaced.id, old_id_status=old_status)
        if interrupted:
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                "interrupted: the board is provisioned (identity written, registered); the firmware may not have "
                f"restarted: run civicedge check --port {shlex.quote(args.port)} {_check_where(args)}", markup=False)
            raise KeyboardInterrupt
        if restarted and fatal is not None:
            port = shlex.quote(args.port)
            where = _check_where(args)
            raise FirmwareStartError(
                f"the board holds its new identity, but its firmware does not run; its console says: {fatal} "
                f"(often: civicedge flash --firmware-only --board {shlex.quote(board_name)} "
                f"--port {port}; then civicedge check --port {port} {where})",
                console=fatal, port=args.port)
        if restarted:
            out.print(f"firmware restarted; next: civicedge check --port {shlex.quote(args.port)} "
                      f"{_check_where(args)} waits for its first accepted report")
        else:
            out.print(f"{'firmware not restarted (press RESET); ' if not args.stay_at_repl else ''}next: reset "
                      f"the board (or civicedge check --port {shlex.quote(args.port)} {_check_where(args)}) and watch "
                      "it report")
        return 0
    return EXIT_ERROR


def _old_id(out: Console, args: argparse.Namespace, result: ProvisionResult) -> str | None:
    """Say what became of the id the board held before a re-provisioning under another id; returns
    ``revoked``, ``registered`` (a ghost: registered with a key no board holds), ``other_key``,
    ``absent`` or ``unknown`` (behind the admin API), or None when the id did not change.

    A ghost id is a usable key no board holds: it is never kept silently. It is only revoked with
    ``--revoke-old`` (revoking is final: a mistyped --id would retire a working board's id).
    """
    old = result.replaced
    if old is None or old.id == result.identity.id:
        return None
    err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
    if args.registry is None:
        err.print(f"warning: the board's old id {old.id} stays registered at the gateway with the key this board "
                  "held (no board holds it now, unless another board took the id over); if it is retired, revoke "
                  f"it on the gateway's host: civicedge gateway devices revoke {old.id} (or POST "
                  f"/api/admin/devices/{old.id}/revoke)")
        return "unknown"
    registry = shlex.quote(str(args.registry))
    status = old_id_status(args.registry, old)
    if status is OldId.GHOST and args.revoke_old:
        try:
            revoke_device(args.registry, old.id)
        except GatewayRegistrationError as exc:
            err.print(f"warning: {exc}; the old id {old.id} stays registered with the key this board held: "
                      f"civicedge gateway devices revoke {old.id} --registry {registry}")
            return "registered"
        out.print(f"old id {old.id}: revoked in the registry (reports under it are refused from now on)")
        return "revoked"
    if status is OldId.GHOST:
        err.print(f"warning: the board's old id {old.id} stays registered with the key this board held, and no "
                  f"board holds it now; if {old.id} is retired, revoke it: civicedge gateway devices revoke "
                  f"{old.id} --registry {registry} (or pass --revoke-old when re-provisioning)")
        return "registered"
    if status is OldId.OTHER_KEY:
        out.print(f"old id {old.id}: registered with another board's key; left as it is")
    return str(status.value)


def _say(line: str) -> None:
    """A line for the person at the terminal on stderr (a warning, what a Ctrl-C left), never markup."""
    Console(stderr=True, highlight=False, markup=False, soft_wrap=True).print(line)


def _check_where(args: argparse.Namespace) -> str:
    """``check``'s options for where the gateway is, from provision's: its admin URL serves the read API;
    a registry directory ``<data_dir>/registry`` has the store beside it (``<data_dir>/reports.sqlite``)."""
    if args.gateway is not None:
        return f"--gateway {shlex.quote(args.gateway)}"
    where = f"--registry {shlex.quote(str(args.registry))}"
    store = Path(args.registry).parent / "reports.sqlite"
    if store.is_file():
        return f"{where} --db {shlex.quote(str(store))}"
    return f"{where} --db GATEWAY-STORE (its [storage] path)"


START_WATCH_S = 3.0  # how long provision reads the console after the restart for a "cannot start"


def _watch_start(dut: Dut, duration_s: float) -> str | None:
    """Read the restarted firmware's console for up to ``duration_s``: its fatal line, if it printed one.
    Stops as soon as the firmware says it runs ("civicedge: ... running")."""
    scan = ConsoleWatch()
    read = _console_reader(dut)
    deadline = time.monotonic() + duration_s
    while (left := deadline - time.monotonic()) > 0:
        fatal = scan.feed(read(min(0.5, left)))
        if fatal is not None:
            return fatal
        if scan.running:
            return None
    return scan.feed(b"\n")


def _check_firmware_for_provision(dut: Dut, args: argparse.Namespace) -> None:
    """Refuse a board whose firmware is missing or does not match its ``/firmware.json`` (as check
    verifies it): a key registered for a board that cannot run would be a label on a dark pole."""
    damaged = False
    try:
        manifest = read_manifest(dut)
    except FirmwareVerifyError as exc:
        problem = str(exc).split(";")[0]
    else:
        if manifest is None:
            problem = ("has no /firmware.json (not flashed with civicedge flash, or its flash was interrupted)")
        else:
            changed = verify_manifest(dut, {str(k): str(v) for k, v in manifest["files"].items()})
            damaged = bool(changed)
            problem = "" if not changed else ("firmware files differ from its /firmware.json (an interrupted flash?): "
                                              + ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else ""))
    if problem:
        board = args.board or read_board_facts(dut).config_name or "BOARD"
        # Damaged code is not restarted (as after a failed flash): it would not start, or half-run.
        left = "; its firmware was not restarted (damaged code)" if damaged else ""
        raise FieldError(f"the board on {args.port} {problem}; nothing was registered{left}; flash it first: "
                         f"civicedge flash --firmware-only --board {shlex.quote(board)} --port {shlex.quote(args.port)} "
                         "(or pass --skip-firmware-check to provision it anyway)", port=args.port,
                         firmware_damaged=damaged)


def _provision_command(args: argparse.Namespace, *, repair: bool, force: bool = False, discard: bool = False) -> str:
    """The ``civicedge provision`` command given; with ``repair``, with ``--force --take-over`` added
    (with ``force``, ``--force``; with ``discard``, ``--discard-unsent``)."""
    parts = ["civicedge", "provision", "--port", args.port, "--id", args.device_id, "--zone", args.zone,
             "--location", args.location]
    if args.board is not None:
        parts += ["--board", args.board]
    if args.registry is not None:
        parts += ["--registry", str(args.registry)]
    else:
        parts += ["--gateway", args.gateway]
        if args.token_file is not None:
            parts += ["--token-file", str(args.token_file)]
    if getattr(args, "skip_firmware_check", False):
        parts.append("--skip-firmware-check")
    if args.force or repair or force:
        parts.append("--force")
    if args.take_over or repair:
        parts.append("--take-over")
    if getattr(args, "discard_unsent", False) or discard:
        parts.append("--discard-unsent")
    return shlex.join(parts)


def _provision_stopped(args: argparse.Namespace, registering: bool, exc: BaseException, *, unsent: int = 0) -> None:
    """Say what an interrupted or failed ``provision`` changed, and the command that finishes it.

    Prints the message of an interruption (the caller re-raises it); raises the :class:`FieldError`
    of a failure after the registration, its message extended with the recovery command.

    The key is registered before the board is written: stopped in between, the registry holds a key
    the board does not have, and a plain re-run is refused as another board's registration.
    """
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if isinstance(exc, GatewayRegistrationError) and exc.details.get("reason") == "storage":
        # The registry could not be written (locked, disk error) and rolled back: the same command repairs it.
        raise FieldError(f"{exc}; nothing was registered and the board's identity is unchanged; re-run when the "
                         f"registry is free: {_provision_command(args, repair=False)}") from exc
    if isinstance(exc, GatewayRegistrationError) and exc.details.get("reason") not in (
            "storage_partial", "registry", "backend_unavailable"):
        return  # the registry refused the key: nothing changed there
    if not registering:
        if isinstance(exc, KeyboardInterrupt):
            err.print("interrupted: nothing was registered and the board's identity is unchanged; re-run: "
                      f"{_provision_command(args, repair=False)}", markup=False)
        return
    repair = (f"the registry may already hold a new key for {args.device_id} that the board does not have (it "
              "reports into the void until this is finished); finish it with: "
              f"{_provision_command(args, repair=True, discard=unsent > 0)}")
    if unsent > 0:
        repair += (f" (the board's {unsent} un-sent report(s), framed under its old key, are dropped with it: the "
                   "registry no longer holds that key)")
    if isinstance(exc, KeyboardInterrupt):
        err.print(f"interrupted: {repair}", markup=False)
        return
    raise FieldError(f"{exc}; {repair}") from exc


def _admin_token(path: Path | None) -> str:
    """The admin token from ``--token-file`` (first line, stripped)."""
    if path is None:
        raise GatewayRegistrationError("--gateway needs the admin token: --token-file FILE (the gateway's "
                                       "[http] admin_token_file)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GatewayRegistrationError(f"cannot read the admin token file {path}: {exc}", token_file=str(path)) from None
    token = lines[0].strip() if lines else ""
    if not token:
        what = "is empty" if not any(line.strip() for line in lines) else "has an empty first line"
        raise GatewayRegistrationError(f"the admin token file {path} {what}; put the gateway's admin token on its "
                                       "first line (the file of the gateway's [http] admin_token_file)",
                                       token_file=str(path))
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0
    if os.name == "posix" and mode & 0o077:
        # As the gateway refuses its own admin_token_file: the token lets anyone register and revoke devices.
        _say(
            f"warning: the admin token file {path} is readable by other users (mode {mode & 0o777:03o}); run: "
            f"chmod 600 {shlex.quote(str(path))}")
    return token


def _board_name(dut: Dut, board: str | None, kind: str) -> str:
    """The board definition for a ``flash`` command: ``--board``, the name in the board's /board.json,
    or the only shipped definition of ``kind`` (else ``BOARD``, with the choices said by ``boards list``)."""
    if board is not None:
        return board
    name = (read_board_config(dut) or {}).get("name")
    if isinstance(name, str) and name:
        return name
    matching = []
    for candidate in list_boards():
        try:
            if load_board(candidate).kind == kind:
                matching.append(candidate)
        except BoardError:
            continue
    return matching[0] if len(matching) == 1 else "BOARD"


def _board_kind(dut: Dut, board: str | None, port: str) -> str:
    if board is not None:
        return str(load_board(board).kind)
    kind = (read_board_config(dut) or {}).get("kind")
    if not isinstance(kind, str):
        raise FieldError(f"the board on {port} was never flashed with the civicedge firmware (no valid "
                         f"{BOARD_CONFIG_PATH}); flash it first: {_first_flash_command(dut, port)}; then re-run "
                         "this command", port=port)
    return kind


def _first_flash_command(dut: Dut, port: str) -> str:
    """The ``flash --firmware-only`` command for a board that was never flashed: the shipped definition
    for its chip (MicroPython's machine string) when there is one, else BOARD and the choices."""
    chip = read_board_facts(dut).chip
    names = []
    for name in list_boards():
        try:
            if chip is None or load_board(name).chip == chip:
                names.append(name)
        except BoardError:
            continue
    command = f"civicedge flash --firmware-only --port {shlex.quote(port)} --board "
    if len(names) == 1:
        return command + shlex.quote(names[0])
    return command + "BOARD" + (f" (BOARD: one of {', '.join(names)})" if names else " (civicedge boards list)")


# --------------------------------------------------------------------------------------------- check
def _check(args: argparse.Namespace) -> int:
    return _with_json(args, _run_check)


def _run_check(args: argparse.Namespace, out: Console, record: dict[str, Any]) -> int:
    with _errors(out, record):
        require_port(args.port)
        if args.gateway is None and args.db is None:
            raise FieldError("tell check where the gateway is: --db PATH (its SQLite store) or --gateway URL")
        if args.db is not None:
            check_store_path(args.db)  # a mistyped --db fails now, not after a whole report window
        try:
            dut = open_board(args.port, timeout_s=args.repl_timeout)
        except KeyboardInterrupt:
            _say("interrupted while connecting to the board: nothing was changed on it; its firmware may "
                             "have been stopped (it restarts by itself within 10 minutes, or press RESET)")
            raise
        restarted = False

        def restart() -> None:
            nonlocal restarted
            _restart(dut, args.repl_timeout)
            restarted = True

        try:
            return _check_board(out, dut, args, restart, record)
        except KeyboardInterrupt:
            if not restarted:  # the finally below gives the board its firmware back
                _say("interrupted while reading the board: nothing was changed on it; its firmware is "
                                 "restarted now")
            raise
        finally:
            if not restarted:
                # Something failed before the restart (a mistyped --registry or --db, a link error):
                # give the board its firmware back instead of leaving a street light stopped.
                try:
                    _restart(dut, args.repl_timeout)
                except HilError as exc:
                    log.warning("could not restart the firmware on %s: %s", args.port, exc)
            dut.close()
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
    flash_cmd = f"civicedge flash --firmware-only --board {facts.config_name or 'BOARD'} --port {args.port}"
    if state.version is None or state.changed:
        # Missing or damaged files: the firmware cannot be trusted to start, waiting tells nothing.
        problems.append(f"the firmware on the board is incomplete or damaged; run {flash_cmd}")
    if facts.config_kind is not None and facts.config_kind != ident.kind:
        problems.append(f"the board is provisioned as a {ident.kind} but its /board.json is for a "
                        f"{facts.config_kind}: its firmware will not start; run civicedge flash --firmware-only "
                        f"--board (a {ident.kind} board definition) --port {args.port}")
    config_chip = (facts.config or {}).get("chip")
    if facts.chip_source == "MicroPython" and isinstance(config_chip, str) and config_chip != facts.chip:
        problems.append(f"the board is an {facts.chip} (MicroPython reports {facts.machine!r}) but its "
                        f"/board.json is for an {config_chip}; run civicedge flash --firmware-only --board (a definition "
                        f"for this chip) --port {args.port}")
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
    link_test = supports_link_test(dut)
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
    if not link_test:
        out.print("link test: the board's firmware has none (older than this release), so check waits for its "
                  f"report window; for an answer in seconds update it: {flash_cmd}")
    watch.mark()  # only a report accepted after this restart counts
    # Written just before the restart; a Ctrl-C in between still restarts (the finally of _run_check),
    # and the firmware takes the request at that restart.
    requested = link_test and request_link_test(dut)
    restart()
    started = time.monotonic()
    scan = ConsoleWatch()
    console = _console_reader(dut)
    try:
        with _steps(out) as step:
            step(f"wait for a new report of {ident.id} at the gateway")
            wait_new_report(watch, device_id=ident.id, timeout_s=timeout_s, console=console, scan=scan)
        if requested and scan.link_test is None:
            scan.feed(console(0.3))  # the firmware's line may come after the gateway stored the report
    except KeyboardInterrupt:
        _say(f"interrupted: still waiting for a report of {ident.id}; nothing was changed on the board "
                         f"(its firmware runs); re-run check to wait again ({time.monotonic() - started:.0f} s waited)")
        raise
    finally:
        record["link_test"] = link_test_result(supported=link_test, requested=requested, answer=scan.link_test)
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


def _restart(dut: Dut, timeout_s: float) -> None:
    """Reading the board stopped its firmware (Ctrl-C); start it again (soft reset)."""
    try:
        dut.soft_reset(timeout_s=timeout_s)
    except DutError as exc:
        raise BoardNotAnsweringError(f"the board on {dut.url} did not restart its firmware: {exc}; press RESET",
                                     port=dut.url) from exc


def _restart_step(dut: Dut, timeout_s: float, step: _Steps) -> bool:
    """The "restart the firmware" step after a flash or provision: whether it restarted (a board that did
    not is left as it is, with a warning: the caller has done its own work already)."""
    step("restart the firmware")
    try:
        _restart(dut, timeout_s)
    except HilError as exc:
        log.warning("%s", exc)
        return False
    return True


def _console_reader(dut: Dut) -> Callable[[float], bytes]:
    """Reads what the running firmware prints; after a link error, waits quietly instead."""
    broken = False

    def read(duration_s: float) -> bytes:
        nonlocal broken
        if not broken:
            try:
                return dut.read_output(duration_s=duration_s)
            except DutError as exc:
                log.info("console of %s no longer readable (%s); watching the gateway only", dut.url, exc)
                broken = True
        time.sleep(duration_s)
        return b""

    return read


# --------------------------------------------------------------------------------------------- helpers
def _open_retrying(port: str, *, timeout_s: float, port_may_vanish: bool) -> Dut:
    """After esptool's reset MicroPython needs a moment to boot (and the USB port to come back).

    Without that reset (``port_may_vanish`` False) a port that is missing or busy fails at once.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        try:
            return open_board(port, timeout_s=min(5.0, timeout_s))
        except (PortNotFoundError, PortBusyError, PortPermissionError):
            # After esptool's reset, udev may give the re-enumerated node its group a moment later.
            if not port_may_vanish or time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
        except BoardNotAnsweringError as exc:
            if time.monotonic() >= deadline:
                waited = time.monotonic() - started  # several attempts of up to 5 s each
                raise BoardNotAnsweringError(
                    f"no MicroPython REPL answered on {port} within {waited:.0f} s (tried since the reset); is "
                    f"this the board's console port (its USB serial), not the data UART? another program (a serial "
                    "monitor, cat) may have the port open and take its answers; check the cable and that "
                    "MicroPython is flashed, then press RESET and retry (--repl-timeout S waits longer)",
                    port=port, timeout_s=waited) from exc
            time.sleep(0.5)
        except FieldError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


class _Steps:
    """Steps on a rich progress display: each call starts a step and completes the previous one."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._current: list[tuple[TaskID, str]] = []

    def __call__(self, name: str) -> None:
        self.finish()
        self._current.append((self._progress.add_task(name, total=1), name))

    def count(self, done: int, total: int) -> None:
        """Show how far the current step is (files copied of those that differ)."""
        if self._current:
            task, name = self._current[-1]
            self._progress.update(task, description=f"{name}: {done}/{total} copied")

    def finish(self) -> None:
        """Mark the current step complete."""
        if self._current:
            self._progress.update(self._current[-1][0], completed=1)

    def fail(self) -> None:
        """Mark the current step failed (or interrupted), unless it is complete."""
        if self._current:
            task = self._current[-1][0]
            if not any(t.id == task and t.finished for t in self._progress.tasks):
                self._progress.update(task, failed=True)


class _StepMark(ProgressColumn):
    """✓ for a done step, ✗ for the step that failed or was interrupted, a spinner while one runs (on a
    terminal only: a log or a pipe gets no spinner frames)."""

    def __init__(self, animate: bool) -> None:
        super().__init__()
        self._spinner = SpinnerColumn() if animate else None

    def render(self, task: Task) -> RenderableType:
        if task.fields.get("failed"):
            return Text("✗", style="bold red")
        if task.finished:
            return Text("✓", style="green")
        return self._spinner.render(task) if self._spinner is not None else Text("-")


@contextmanager
def _steps(out: Console) -> Iterator[_Steps]:
    """A rich progress display of :class:`_Steps`; the step running when it ends by an exception is marked ✗."""
    with Progress(_StepMark(animate=out.is_terminal), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=out, transient=False) as progress:
        steps = _Steps(progress)
        try:
            yield steps
        except BaseException:
            steps.fail()
            raise
        steps.finish()


@dataclass
class _FlashProgress:
    """How far ``flash`` got, for the message of an interrupted run."""

    erase_started: bool = False
    writing_started: bool = False  # esptool erased or wrote, or the firmware copy changed a file


def _flash_command(args: argparse.Namespace) -> str:
    """The ``civicedge flash`` command the technician ran, with every option that changes what it does."""
    parts = ["civicedge", "flash", "--board", args.board, "--port", args.port]
    if args.firmware_only:
        parts.append("--firmware-only")
    else:
        if args.micropython is not None:
            parts += ["--micropython", str(args.micropython)]
        if args.no_erase:
            parts.append("--no-erase")
    if args.source:
        parts.append("--source")
    if args.repl_timeout != 20.0:
        parts += ["--repl-timeout", f"{args.repl_timeout:g}"]
    return shlex.join(parts)


@contextmanager
def _interrupted(args: argparse.Namespace, done: _FlashProgress) -> Iterator[None]:
    """On Ctrl-C during flash, say what state the board is left in and how to repair it.

    The re-run command is the one given (``--no-erase`` kept: advice that drops it would wipe the
    flash); the identity is only said to be kept when the erase did not start, and nothing is said
    to be broken when nothing was written yet (esptool had not begun, the copy had not changed a file).
    """
    try:
        yield
    except KeyboardInterrupt:
        if not done.writing_started:
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                "interrupted: nothing was written to the board (its MicroPython, firmware and identity are as "
                f"they were); re-run: {_flash_command(args)}", markup=False)
            raise
        written = "firmware" if args.firmware_only else "MicroPython or firmware"
        if done.erase_started:
            identity = ("the erase had started, so its identity and files may be gone: after the re-run, provision "
                        f"it again (civicedge provision --port {shlex.quote(args.port)} --id ITS-ID ... --take-over: "
                        "the registry still holds the key the erase removed)")
        else:
            identity = "its identity, if any, is kept"
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"interrupted: the board may hold a partly written {written} and may not start until it is flashed "
            f"again; {identity}; re-run to repair it: {_flash_command(args)}", markup=False)
        raise


JSON_COMMANDS = ("provision", "check")  # the commands with --json
USAGE_ERROR = "invalid arguments (see stderr)"  # argparse prints the message itself


def _json_record(**fields: Any) -> dict[str, Any]:
    """A ``--json`` record: ``result: error`` until the command says otherwise."""
    return {"id": None, "port": None, "fingerprint": None, "result": "error", **fields}


def usage_error_json(argv: list[str], code: int | str | None) -> None:
    """``--json`` promises one JSON object on stdout whatever happens: for a usage error argparse found
    in ``argv`` of a :data:`JSON_COMMANDS` command, print it (with ``exit`` ``code``)."""
    command = next((w for w in argv if not w.startswith("-")), None)
    if "--json" in argv and command in JSON_COMMANDS:
        print(json.dumps(_json_record(exit=code, error=USAGE_ERROR), sort_keys=True), flush=True)


def _with_json(args: argparse.Namespace, run: Callable[[argparse.Namespace, Console, dict[str, Any]], int]) -> int:
    """Run ``provision`` or ``check``; with ``--json``, stdout gets exactly one JSON object at the end
    (``id``, ``port``, ``fingerprint``, ``result``: ``provisioned``/``unchanged``, ``ok``/``problem``,
    ``error`` with ``error``, or ``interrupted``), and what a person reads goes to stderr."""
    as_json = bool(getattr(args, "json", False))
    out = Console(stderr=as_json, highlight=False, markup=False, soft_wrap=True)
    record = _json_record(id=getattr(args, "device_id", None), port=args.port)
    try:
        rc = run(args, out, record)
        record["exit"] = rc
        return rc
    except KeyboardInterrupt:
        record.update(result="interrupted", exit=130)
        raise
    except SystemExit as exc:  # args.parser.error: a usage error found while running (message on stderr)
        record.update(result="error", exit=exc.code if isinstance(exc.code, int) else 2)
        record.setdefault("error", USAGE_ERROR)
        raise
    except Exception as exc:  # not one of ours: the record still says what failed (the traceback follows)
        record.update(result="error", exit=1, error="%s: %s" % (type(exc).__name__, exc))
        raise
    finally:
        if as_json:
            print(json.dumps(record, sort_keys=True), flush=True)


@contextmanager
def _errors(out: Console, record: dict[str, Any] | None = None) -> Iterator[None]:
    """Turn our errors into one ``error:`` line on stderr (the caller then returns EXIT_ERROR);
    ``record`` (``--json``) gets ``result: error`` and the message."""
    try:
        yield
    except (HilError, BoardError) as exc:
        if record is not None:
            record.update(result="error", error=str(exc))
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"error: {exc}", markup=False)
        log.debug("failed: %s", type(exc).__name__)
