"""``civicedge provision``: give a flashed board its identity and key, and register it.

Every failure ends with one ``error:`` line saying what to do, and exit status 2. Keys are never
printed: labels carry the key fingerprint.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from gateway.cli.devices_cmd import LOCATION_HELP_NOTE, accept_negative_location
from hil.boards import BoardDefinition, BoardError, load_board
from gateway.resources import boards_dir
from hil.boards.search import SHIPPED, BoardDirectory, find_board_files
from hil.dut import Dut
from hil.errors import HilError
from hil.field.board_facts import check_definition_fits, read_board_config, read_board_facts
from hil.field.cli_common import EXIT_ERROR, errors, say, seconds, with_json
from hil.field.cli_steps import steps
from hil.field.device import BOARD_CONFIG_PATH, count_outbox, open_board
from hil.field.errors import (
    DamagedIdentityError, FieldError, FirmwareStartError, FirmwareVerifyError, GatewayRegistrationError,
    UnsentReportsError,
)
from hil.field.firmware_copy import read_manifest, verify_manifest, write_board_config
from hil.field.firmware_restart import START_WATCH_S, restart_quietly, restart_step, watch_start
from gateway.registry.zones import normalize_zone
from hil.field.identity import parse_location, validate_fields
from hil.field.ports import require_port
from hil.field.provision import ProvisionResult, provision_board
from hil.field.registration import AdminApiRegistrar, OldId, old_id_status, registered_device, revoke_device
from hil.field.seq_floor import SEQ_WARN_ABOVE, check_seq_floor, highest_stored_seq

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``provision`` to the ``civicedge`` command line."""
    prov = subparsers.add_parser(
        "provision", help="give a flashed board its identity and key, register it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Give a flashed board its identity: a device id, zone, location and a new random key,\n"
                    "written to its /identity.json, and register the id and key with the gateway, in its\n"
                    "registry directory (--registry) or through its admin API (--gateway). The key is\n"
                    "never printed: the label shows its fingerprint. Then the board's firmware restarts\n"
                    "and reports. Needs a board flashed with civicedge flash. Next: civicedge check.\n"
                    "\n"
                    "example:\n"
                    "  civicedge provision --port /dev/ttyUSB0 --id sl-0042 --zone centre \\\n"
                    "      --location 52.3702,4.8952 --registry /srv/civicedge/registry")
    prov.add_argument("--port", required=True, help="serial port of the board")
    prov.add_argument("--id", required=True, dest="device_id", help="device id, e.g. sl-0042")
    prov.add_argument("--zone", required=True, help="city zone, e.g. centre or Südstadt (letters and digits of any "
                      "script, space . _ -; up to 64 characters)")
    prov.add_argument("--location", required=True, metavar="LAT,LON",
                      help="decimal degrees, e.g. 52.3702,4.8952" + LOCATION_HELP_NOTE)
    accept_negative_location(prov)
    prov.add_argument("--board", help="board definition (default: the kind in the board's /board.json)")
    where = prov.add_mutually_exclusive_group(required=True)
    where.add_argument("--registry", type=Path, help="the gateway's registry directory")
    where.add_argument("--gateway", help="gateway URL, e.g. http://gateway.local:8080: register through its admin API")
    prov.add_argument("--token-file", type=Path, help="the gateway's admin token file (required with --gateway)")
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
    prov.add_argument("--db", type=Path,
                      help="the gateway's SQLite report store (read-only), to start the board's report seqs above "
                           "those stored under the id (default with --registry: reports.sqlite beside the registry "
                           "directory, when there is one; with --gateway: the gateway's admin API says it)")
    prov.add_argument("--seq-start", type=_seq_start, metavar="N",
                      help="the board's next report seq is at least N (never lowered): for a board taking over an id "
                           "with stored reports when neither the gateway's store nor (with --gateway) a gateway "
                           "answering GET /api/admin/devices/{id}/seq is at hand (the gateway's seq_reused warning "
                           "names N)")
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
    prov.add_argument("--repl-timeout", type=seconds, default=10.0,
                      help="seconds to wait for the REPL (default: %(default)g)")
    prov.add_argument("--json", action="store_true",
                      help="print one JSON object on stdout (id, port, fingerprint, result, label, ...; the "
                           "progress and messages go to stderr), for batch scripts")
    prov.set_defaults(func=_provision, parser=prov)


def _provision(args: argparse.Namespace) -> int:
    return with_json(args, _run_provision)


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
    with errors(record):
        require_port(args.port)
        lat, lon = parse_location(args.location)
        args.zone = normalize_zone(args.zone)  # NFC on the board, in the registry and in the echoed commands
        validate_fields(device_id=args.device_id, zone=args.zone)  # the registry's rules, before the port
        if float(lat) == 0 and float(lon) == 0:
            say(f"warning: location {args.location} is 0,0 (in the sea off West Africa): what a GPS without a fix "
                "reports; check the pole's coordinates (a wrong location is corrected later with civicedge gateway "
                "devices move)")
        # Loaded once, for the board check, the kind and the board config: a bad definition fails now,
        # not after the board was stopped.
        definition = load_board(args.board) if args.board is not None else None
        registrar = None
        if args.gateway is not None:
            registrar = AdminApiRegistrar(args.gateway, _admin_token(args.token_file))
            if registrar.plain_http_remote:
                say(f"warning: the device key goes to {args.gateway} over plain HTTP; serve the gateway's "
                    "API over TLS (https://) when provisioning from another host")
        elif args.token_file is not None:
            raise GatewayRegistrationError("--token-file goes with --gateway URL (the admin API), not --registry")
        seq_floor, seq_from = _seq_floor(args, registrar)
        with steps(out) as step:
            step("connect to the board")
            try:
                dut = open_board(args.port, timeout_s=args.repl_timeout)
            except KeyboardInterrupt:
                say("interrupted while connecting to the board: nothing was written to it and nothing "
                    "was registered; its firmware may have been stopped (it restarts by itself within "
                    f"10 minutes, or press RESET); re-run: {_provision_command(args, repair=False)}")
                raise
            try:
                try:
                    if definition is not None:
                        step("check the board")
                        # Only the chip: provisioning gives the board a new identity of the definition's kind.
                        check_definition_fits(read_board_facts(dut), definition, port=args.port,
                                              check_kind=False)
                    kind = _board_kind(dut, definition, args.port)
                    board_name = _board_name(dut, args.board, kind)
                    if not args.skip_firmware_check:
                        step("check the firmware")
                        _check_firmware_for_provision(dut, args)
                    step("write identity and register")
                    unsent = count_outbox(dut) if args.force else 0  # for the advice of a stopped re-keying
                except KeyboardInterrupt:
                    # Only read so far; the handler below gives the firmware back (unless --stay-at-repl).
                    left = ("it stays at the REPL (it restarts by itself within 10 minutes, or press RESET)"
                            if args.stay_at_repl else "its firmware is restarted")
                    say("interrupted while checking the board: nothing was written to it and nothing was "
                        f"registered; {left}; re-run: {_provision_command(args, repair=False)}")
                    raise
                registering = False

                def on_registering() -> None:
                    nonlocal registering
                    registering = True

                try:
                    result = provision_board(dut, device_id=args.device_id, kind=kind, zone=args.zone, lat=lat,
                                             lon=lon, registry_dir=args.registry, registrar=registrar,
                                             force=args.force, take_over=args.take_over,
                                             discard_unsent=args.discard_unsent, on_registering=on_registering,
                                             seq_floor=seq_floor)
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
                        f"replace it with: {_damaged_identity_command(args)}", **exc.details) from None
                except (HilError, BoardError, KeyboardInterrupt) as exc:
                    _provision_stopped(args, registering, exc, unsent=unsent)
                    raise
                if definition is not None:
                    step("write board config")
                    write_board_config(dut, definition.to_device_config())
            except BaseException as exc:
                # Refused or failed: a street light must not stay dark at the REPL until its watchdog
                # resets it; it runs again as it was (or with what was written). Not firmware whose
                # files differ from its /firmware.json: that code is not started (as after a failed flash).
                try:
                    if not args.stay_at_repl and not (isinstance(exc, FieldError)
                                                      and exc.details.get("firmware_damaged")):
                        restart_quietly(dut, port=args.port, timeout_s=args.repl_timeout)
                finally:
                    dut.close()  # a Ctrl-C during that restart too: an open port stays locked
                raise
            restarted = False
            fatal: str | None = None
            interrupted = False
            try:
                if not args.stay_at_repl:
                    # A street light must not stay dark at the REPL until its watchdog resets it.
                    restarted = restart_step(dut, args.repl_timeout, step)
                    if restarted:
                        step("watch the firmware start")
                        fatal = watch_start(dut, START_WATCH_S)
            except KeyboardInterrupt:
                # The board is provisioned by now: its label must not be lost with the Ctrl-C.
                interrupted = True
            finally:
                dut.close()
        what = "written" if result.device_changed else "already on the board (unchanged)"
        out.print(f"identity {what}; registry: {result.registration.value}")
        out.print(f"LABEL: {result.label()}")
        _say_seq(out, args, result, seq_floor, seq_from, record)
        old_status = _old_id(out, args, result)
        record.update(fingerprint=result.identity.fingerprint, kind=result.identity.kind, zone=result.identity.zone,
                      lat=result.identity.lat, lon=result.identity.lon, label=result.label(),
                      registry=result.registration.value, firmware_restarted=restarted and fatal is None,
                      result="provisioned" if result.device_changed else "unchanged")
        if result.replaced is not None and result.replaced.id != result.identity.id:
            record.update(old_id=result.replaced.id, old_id_status=old_status)
        if interrupted:
            say("interrupted: the board is provisioned (identity written, registered); the firmware may not have "
                f"restarted: run civicedge check --port {shlex.quote(args.port)} {_check_where(args)}")
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
    ``--revoke-old`` (revoking is final: a mistyped --id would revoke a working board's id).
    """
    old = result.replaced
    if old is None or old.id == result.identity.id:
        return None
    if args.registry is None:
        revoke_there = shlex.join(["civicedge", "gateway", "devices", "revoke", old.id])
        say(f"warning: the board's old id {old.id} stays registered at the gateway with the key this board "
            "held (no board holds it now, unless another board took the id over); if it is no longer used, "
            f"revoke it on the gateway's host: {revoke_there} (or POST /api/admin/devices/{old.id}/revoke)")
        return "unknown"
    # Echoed arguments are shell-quoted: the command must paste as is (a registry path with a space).
    revoke = shlex.join(["civicedge", "gateway", "devices", "revoke", old.id, "--registry", str(args.registry)])
    status = old_id_status(args.registry, old)
    if status is OldId.GHOST and args.revoke_old:
        try:
            revoke_device(args.registry, old.id)
        except GatewayRegistrationError as exc:
            say(f"warning: {exc}; the old id {old.id} stays registered with the key this board held: "
                f"{revoke}")
            return "registered"
        out.print(f"old id {old.id}: revoked in the registry (reports under it are refused from now on)")
        return "revoked"
    if status is OldId.GHOST:
        say(f"warning: the board's old id {old.id} stays registered with the key this board held, and no "
            f"board holds it now; if {old.id} is no longer used, revoke it: {revoke} (or pass --revoke-old when "
            "re-provisioning)")
        return "registered"
    if status is OldId.OTHER_KEY:
        out.print(f"old id {old.id}: registered with another board's key; left as it is")
    return str(status.value)


def _seq_start(text: str) -> int:
    """``--seq-start``: a seq in 1..2**32-1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (a report seq, e.g. 1000)") from None
    if not 1 <= n <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{n} is outside 1..4294967295 (the report seq space)")
    return n


def _seq_floor(args: argparse.Namespace, registrar: AdminApiRegistrar | None) -> tuple[int | None, str]:
    """The seq the board must count above, and where it came from: the larger of ``--seq-start`` - 1 and
    the id's highest seq in the gateway store (``--db``, or the one beside ``--registry``), else as the
    gateway's admin API says it (``--gateway``; 0 for an id it has not registered); None when none of
    them is at hand. Asked before the board is touched: a refusal changes nothing."""
    floors: list[tuple[int, str]] = []
    if args.seq_start is not None:
        floors.append((args.seq_start - 1, "--seq-start"))
    db: Path | None = args.db
    if db is None and args.registry is not None:
        beside = Path(args.registry).parent / "reports.sqlite"
        db = beside if beside.is_file() else None
    if db is not None:
        floors.append((highest_stored_seq(db, args.device_id), f"the gateway store {db}"))
    elif registrar is not None:
        try:
            stored = registrar.highest_seq(args.device_id)
        except GatewayRegistrationError as exc:
            if exc.details.get("reason") != "no_seq_endpoint" or args.seq_start is None:
                raise
            # An older gateway, and the technician gave the floor the error asks for.
            say(f"note: the gateway at {registrar.base_url} cannot say the highest report seq it stored under "
                f"{args.device_id} (an older version); the board's seqs start at --seq-start {args.seq_start} at "
                "least")
        else:
            floors.append((stored or 0, f"the gateway at {registrar.base_url}"))
    if not floors:
        return None, ""
    floor, source = max(floors)
    check_seq_floor(floor)  # the id's seq space used up: refused before the board is touched
    if floor > SEQ_WARN_ABOVE:
        say(f"warning: {args.device_id} has used over half its report seq space (seq {floor} from {source}, the "
            "last is 4294967295): plan to provision its board under a new id")
    return floor, source


def _say_seq(out: Console, args: argparse.Namespace, result: ProvisionResult, floor: int | None, source: str,
             record: dict[str, Any]) -> None:
    """Say where the board's report seqs start, or warn when a board taking over or re-keying a registered
    id was given no seq floor: if its counter starts below the seqs the gateway stored under the id, the
    gateway refuses its reports (``seq_reused``), and they are lost until the board is provisioned again with the
    floor."""
    if result.seq is not None:
        before, after = result.seq
        record.update(seq_reserved=after)
        if before < 0:
            out.print(f"report seqs: the board's seq files were damaged (its firmware would not start); written "
                      f"afresh: start above {after} (the highest stored under {result.identity.id}, from {source})")
        elif after > before:
            out.print(f"report seqs: start above {after} (the highest stored under {result.identity.id}, from "
                      f"{source}; the board's counter was at {before})")
        return
    # Another board's id, or one taken by a board without an identity (new, or its flash erased); a board
    # re-keying its own id keeps its counter.
    counter_new = result.replaced is None or result.replaced.id != result.identity.id
    if floor is None and result.device_changed and (args.take_over or (
            counter_new and result.registration.value == "replaced")):
        say(f"warning: {result.identity.id} was registered before and the highest report seq the gateway stored "
            "under it is not known here (pass --db PATH, the gateway's store, or --seq-start N); if this board's "
            "counter starts below it (a new board, or one whose flash was erased), the gateway refuses its "
            "reports (seq_reused: its log names N) and they are lost until the board is provisioned again with "
            f"the floor: {_seq_start_command(args)} (its own identity and key: nothing re-keyed)")


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



def _check_firmware_for_provision(dut: Dut, args: argparse.Namespace) -> None:
    """Refuse a board whose firmware is missing or does not match its ``/firmware.json`` (as check
    verifies it): a key registered for a board that cannot run would be a label on a dark pole."""
    damaged = False
    try:
        manifest = read_manifest(dut)
    except FirmwareVerifyError as exc:
        problem = ": " + str(exc).split(";")[0]
    else:
        if manifest is None:
            problem = (" has no /firmware.json (not flashed with civicedge flash, or its flash was interrupted)")
        else:
            changed = verify_manifest(dut, {str(k): str(v) for k, v in manifest["files"].items()})
            damaged = bool(changed)
            problem = "" if not changed else (": its firmware files differ from its /firmware.json (an interrupted "
                                              "flash?): "
                                              + ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else ""))
    if problem:
        board = args.board or read_board_facts(dut).config_name or "BOARD"
        # Damaged code is not restarted (as after a failed flash): it would not start, or half-run.
        left = "; its firmware was not restarted (damaged code)" if damaged else ""
        raise FieldError(f"the board on {args.port}{problem}; nothing was registered{left}; flash it first: "
                         f"civicedge flash --firmware-only --board {shlex.quote(board)} --port {shlex.quote(args.port)} "
                         "(or pass --skip-firmware-check to provision it anyway)", port=args.port,
                         firmware_damaged=damaged)


def _damaged_identity_command(args: argparse.Namespace) -> str:
    """The command that replaces a damaged ``/identity.json``: ``--force``, and ``--take-over`` when the
    registry directory holds the id (the board's old key cannot be read, so the registration counts as
    another board's: ``--force`` alone is refused). Behind the admin API the registration is not known
    here: the command is followed by when ``--take-over`` is needed."""
    caution = f"only if {args.device_id} was this board's; a board holding it is refused from then on"
    if args.registry is None:
        return (f"{_provision_command(args, repair=False, force=True)} (add --take-over if the gateway already "
                f"holds {args.device_id} with another key: {caution})")
    try:
        held = registered_device(args.registry, args.device_id)
    except GatewayRegistrationError as exc:  # only advice: the re-run says what is wrong with the registry
        log.info("cannot read %s for the advice: %s", args.registry, exc)
        held = None
    take_over = held is not None and not held.revoked
    return _provision_command(args, repair=take_over, force=True) + (f" (--take-over: {caution})" if take_over else "")


def _seq_start_command(args: argparse.Namespace) -> str:
    """The command that raises a provisioned board's seq floor: the same identity and registry options with
    ``--seq-start N``, never ``--force``/``--take-over``/``--discard-unsent`` (re-keying would meet the reports
    the gateway refused, still in its outbox: UnsentReportsError)."""
    plain = argparse.Namespace(**{**vars(args), "force": False, "take_over": False, "discard_unsent": False,
                                  "db": None, "seq_start": None})
    return _provision_command(plain, repair=False) + " --seq-start N"


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
    if getattr(args, "db", None) is not None:
        parts += ["--db", str(args.db)]
    if getattr(args, "seq_start", None) is not None:
        parts += ["--seq-start", str(args.seq_start)]
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
    if isinstance(exc, GatewayRegistrationError) and exc.details.get("reason") == "storage":
        # The registry could not be written (locked, disk error) and rolled back: the same command repairs it.
        raise FieldError(f"{exc}; nothing was registered and the board's identity is unchanged; re-run when the "
                         f"registry is free: {_provision_command(args, repair=False)}") from exc
    if isinstance(exc, GatewayRegistrationError) and exc.details.get("reason") not in (
            "storage_partial", "registry", "backend_unavailable"):
        return  # the registry refused the key: nothing changed there
    if isinstance(exc, FieldError) and exc.details.get("registry_restored"):
        return  # the board refused the write and the registry holds the key the board has again: said so
    if isinstance(exc, FieldError) and exc.details.get("registry_ended"):
        return  # revoked or retired meanwhile at the gateway, and said so: a take-over would be refused
    if isinstance(exc, FieldError) and exc.details.get("registry_changed"):
        # Someone else re-registered the id meanwhile: whether it is still this board's is theirs to say.
        raise FieldError(f"{exc}; if {args.device_id} is still meant for this board (ask who registered it): "
                         f"{_provision_command(args, repair=True, discard=unsent > 0)}", **exc.details) from exc
    if not registering:
        if isinstance(exc, KeyboardInterrupt):
            say("interrupted: nothing was registered and the board's identity is unchanged; re-run: "
                f"{_provision_command(args, repair=False)}")
        return
    repair = (f"the registry may already hold a new key for {args.device_id} that the board does not have (it "
              "reports into the void until this is finished); finish it with: "
              f"{_provision_command(args, repair=True, discard=unsent > 0)}")
    if unsent > 0:
        repair += (f" (the board's {unsent} un-sent report(s), framed under its old key, are dropped with it: the "
                   "registry no longer holds that key)")
    if isinstance(exc, KeyboardInterrupt):
        say(f"interrupted: {repair}")
        return
    raise FieldError(f"{exc}; {repair}") from exc


def _admin_token(path: Path | None) -> str:
    """The admin token from ``--token-file`` (first line, stripped)."""
    if path is None:
        raise GatewayRegistrationError("--gateway needs the admin token: --token-file FILE (the gateway's "
                                       "[http] admin_token_file)")
    try:
        # a Notepad byte-order mark is not part of the token (the gateway drops it too: config loader)
        lines = path.read_text(encoding="utf-8").removeprefix("\ufeff").splitlines()
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
        say(f"warning: the admin token file {path} is readable by other users (mode {mode & 0o777:03o}); run: "
            f"chmod 600 {shlex.quote(str(path))}")
    return token


def _board_name(dut: Dut, board: str | None, kind: str) -> str:
    """The board definition for a ``flash`` command: ``--board``, the name in the board's /board.json,
    or the only known definition of ``kind`` (else ``BOARD``, with the choices said by ``boards list``)."""
    if board is not None:
        return board
    name = (read_board_config(dut) or {}).get("name")
    if isinstance(name, str) and name:
        return name
    matching = _known_boards(lambda definition: definition.kind == kind)
    return matching[0] if len(matching) == 1 else "BOARD"


def _board_kind(dut: Dut, definition: BoardDefinition | None, port: str) -> str:
    """The kind of the identity to write: ``--board``'s, else the one in the board's /board.json."""
    if definition is not None:
        return str(definition.kind)
    kind = (read_board_config(dut) or {}).get("kind")
    if not isinstance(kind, str):
        raise FieldError(f"the board on {port} was never flashed with the civicedge firmware (no valid "
                         f"{BOARD_CONFIG_PATH}); flash it first: {_first_flash_command(dut, port)}; then re-run "
                         "this command", port=port)
    return kind


def _first_flash_command(dut: Dut, port: str) -> str:
    """The ``flash --firmware-only`` command for a board that was never flashed: the known definition
    for its chip (MicroPython's machine string) when there is one, else BOARD and the choices."""
    chip = read_board_facts(dut).chip
    names = _known_boards(lambda definition: chip is None or definition.chip == chip)
    command = f"civicedge flash --firmware-only --port {shlex.quote(port)} --board "
    if len(names) == 1:
        return command + shlex.quote(names[0])
    return command + "BOARD" + (f" (BOARD: one of {', '.join(names)})" if names else " (civicedge boards list)")


def _known_boards(fits: Callable[[BoardDefinition], bool]) -> list[str]:
    """The names of the board definitions ``--board NAME`` finds (a site's ``CIVICEDGE_BOARDS``
    directories, then the shipped ones) that ``fits``; one that does not load is passed over. A wrong
    ``CIVICEDGE_BOARDS`` falls back to the shipped boards: this only builds advice, and the command it
    prints reports the variable itself."""
    try:
        found = find_board_files()
    except BoardError:
        found = find_board_files([BoardDirectory(boards_dir(), SHIPPED)])
    names = []
    for name, (path, _folder) in sorted(found.items()):
        try:  # by the file found, so a site file hiding a shipped name is the one checked, as --board loads it
            if fits(load_board(path)):
                names.append(name)
        except BoardError:
            continue
    return names
