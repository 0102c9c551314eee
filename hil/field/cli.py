"""``civicedge flash`` / ``provision`` / ``check``: the two commands at the streetlight, and a check.

Every failure ends with one ``error:`` line saying what to do, and exit status 2 (bad input,
board, port or gateway) or 1 (the check found a problem). Keys are never printed: labels carry
the key fingerprint.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from hil.boards import BoardError, load_board
from hil.dut import Dut
from hil.errors import HilError
from hil.field.check import (
    first_report_from_db, first_report_from_http, inspect_board, wait_first_report,
)
from hil.field.chips import chip_profile
from hil.field.device import BOARD_CONFIG_PATH, open_board, read_text
from hil.field.errors import FieldError, GatewayRegistrationError
from hil.field.esp_flash import execute_flash, plan_flash
from hil.field.firmware_copy import copy_firmware, write_board_config
from hil.field.identity import parse_location
from hil.field.provision import provision_board
from hil.field.registration import AdminApiRegistrar, registered_matches

log = logging.getLogger(__name__)
EXIT_PROBLEM = 1
EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``flash``, ``provision`` and ``check`` to the ``civicedge`` command line."""
    flash = subparsers.add_parser("flash", help="flash MicroPython and the civicedge firmware onto a board")
    flash.add_argument("--board", required=True, help="board definition name (boards/<name>.toml) or path")
    flash.add_argument("--port", required=True, help="serial port of the board (e.g. /dev/ttyUSB0)")
    flash.add_argument("--micropython", type=Path, help="MicroPython release image (.bin) for the chip")
    flash.add_argument("--no-erase", action="store_true", help="do not erase the flash before writing")
    flash.add_argument("--firmware-only", action="store_true", help="skip esptool: MicroPython is already there")
    flash.add_argument("--source", action="store_true", help="copy .py sources instead of compiled .mpy")
    flash.add_argument("--repl-timeout", type=float, default=20.0, help="seconds to wait for the REPL (default 20)")
    flash.set_defaults(func=_flash)

    prov = subparsers.add_parser("provision", help="give a flashed board its identity and key, register it")
    prov.add_argument("--port", required=True, help="serial port of the board")
    prov.add_argument("--id", required=True, dest="device_id", help="device id, e.g. sl-0042")
    prov.add_argument("--zone", required=True, help="city zone, e.g. centre")
    prov.add_argument("--location", required=True, help="LAT,LON in decimal degrees, e.g. 52.3702,4.8952")
    prov.add_argument("--board", help="board definition (default: the kind in the board's /board.json)")
    where = prov.add_mutually_exclusive_group(required=True)
    where.add_argument("--registry", type=Path, help="the gateway's registry directory")
    where.add_argument("--gateway", help="gateway URL, e.g. http://gateway.local:8080: register through its admin API")
    prov.add_argument("--token-file", type=Path, help="the gateway's admin token file (with --gateway)")
    prov.add_argument("--force", action="store_true", help="replace an identity the board already has")
    prov.add_argument("--repl-timeout", type=float, default=10.0, help="seconds to wait for the REPL")
    prov.set_defaults(func=_provision)

    check = subparsers.add_parser("check", help="read back a board and wait for its first accepted report")
    check.add_argument("--port", required=True, help="serial port of the board")
    check.add_argument("--registry", type=Path, help="the gateway's registry directory: check the key registered there")
    check.add_argument("--db", type=Path, help="the gateway's SQLite report store (read-only)")
    check.add_argument("--gateway", help="gateway URL (HTTP read API)")
    check.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the first report")
    check.add_argument("--repl-timeout", type=float, default=10.0, help="seconds to wait for the REPL")
    check.set_defaults(func=_check)


# --------------------------------------------------------------------------------------------- flash
def _flash(args: argparse.Namespace) -> int:
    out = Console(highlight=False, markup=False, soft_wrap=True)
    with _errors(out):
        definition = load_board(args.board)
        chip = chip_profile(definition.chip)
        with _steps(out) as step:
            if not args.firmware_only:
                if args.micropython is None:
                    raise FieldError("--micropython IMAGE.bin is required unless --firmware-only is given")
                plan = plan_flash(port=args.port, chip=chip, image=args.micropython, erase=not args.no_erase)
                step(f"connect to the {chip.esptool_name} bootloader")
                execute_flash(plan, on_step=lambda s: step(s.describe()))
            step("wait for the MicroPython REPL")
            dut = _open_retrying(args.port, timeout_s=args.repl_timeout)
            try:
                result = copy_firmware(dut, board_config=definition.to_device_config(), source_only=args.source,
                                       on_progress=step)
            finally:
                dut.close()
        out.print(f"flashed {definition.name} on {args.port}: firmware as {result.mode} "
                  f"(device .mpy v{result.device_mpy}), {len(result.copied)} files copied, "
                  f"{len(result.unchanged)} unchanged, all verified by hash")
        out.print("next: civicedge provision --port %s --id ID --zone ZONE --location LAT,LON "
                  "(--registry DIR | --gateway URL --token-file FILE)" % args.port)
        return 0
    return EXIT_ERROR


# --------------------------------------------------------------------------------------------- provision
def _provision(args: argparse.Namespace) -> int:
    out = Console(highlight=False, markup=False, soft_wrap=True)
    with _errors(out):
        lat, lon = parse_location(args.location)
        registrar = None
        if args.gateway is not None:
            registrar = AdminApiRegistrar(args.gateway, _admin_token(args.token_file))
            if registrar.plain_http_remote:
                out.print(f"warning: the device key goes to {args.gateway} over plain HTTP; serve the gateway's "
                          "API over TLS (https://) when provisioning from another host")
        elif args.token_file is not None:
            raise GatewayRegistrationError("--token-file goes with --gateway URL (the admin API), not --registry")
        with _steps(out) as step:
            step("connect to the board")
            dut = open_board(args.port, timeout_s=args.repl_timeout)
            try:
                kind = _board_kind(dut, args.board)
                step("write identity and register")
                result = provision_board(dut, device_id=args.device_id, kind=kind, zone=args.zone, lat=lat, lon=lon,
                                         registry_dir=args.registry, registrar=registrar, force=args.force)
                if args.board is not None:
                    step("write board config")
                    write_board_config(dut, load_board(args.board).to_device_config())
            finally:
                dut.close()
        what = "written" if result.device_changed else "already on the board (unchanged)"
        out.print(f"identity {what}; registry: {result.registration.value}")
        out.print(f"LABEL: {result.label()}")
        out.print("next: reset the board (or civicedge check --port %s ...) and watch it report" % args.port)
        return 0
    return EXIT_ERROR


def _admin_token(path: Path | None) -> str:
    """The admin token from ``--token-file`` (first line, stripped)."""
    if path is None:
        raise GatewayRegistrationError("--gateway needs the admin token: --token-file FILE (the gateway's "
                                       "[http] admin_token_file)")
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise GatewayRegistrationError(f"cannot read the admin token file {path}: {exc}", token_file=str(path)) from None
    if not token:
        raise GatewayRegistrationError(f"the admin token file {path} is empty", token_file=str(path))
    return token


def _board_kind(dut: Dut, board: str | None) -> str:
    if board is not None:
        return str(load_board(board).kind)
    text = read_text(dut, BOARD_CONFIG_PATH)
    try:
        kind = json.loads(text)["kind"] if text else None
    except (ValueError, KeyError, TypeError):
        kind = None
    if not isinstance(kind, str):
        raise FieldError(f"the board has no valid {BOARD_CONFIG_PATH}; run civicedge flash first or pass --board")
    return kind


# --------------------------------------------------------------------------------------------- check
def _check(args: argparse.Namespace) -> int:
    out = Console(highlight=False, markup=False, soft_wrap=True)
    with _errors(out):
        if args.gateway is None and args.db is None:
            raise FieldError("tell check where the gateway is: --db PATH (its SQLite store) or --gateway URL")
        dut = open_board(args.port, timeout_s=args.repl_timeout)
        try:
            state = inspect_board(dut)
            # Reading the board stopped its firmware (Ctrl-C); start it again.
            dut.soft_reset(timeout_s=args.repl_timeout)
        finally:
            dut.close()
        ident = state.identity
        out.print(f"board {ident.id} ({ident.kind}) zone {ident.zone} at {ident.lat},{ident.lon} key {ident.fingerprint}")
        if state.version is None:
            out.print("firmware: no /firmware.json (not flashed with civicedge flash)")
        else:
            out.print(f"firmware: {state.version} ({state.mode}); "
                      f"{'hashes match' if not state.changed else 'CHANGED: ' + ', '.join(state.changed)}"
                      f"{'' if not state.outdated else '; differs from this release: ' + ', '.join(state.outdated)}")
        registry_ok = True
        if args.registry is not None:
            match = registered_matches(args.registry, ident)
            registry_ok = match is True
            out.print({True: "registry: registered with this key", False: "registry: REGISTERED WITH ANOTHER KEY OR "
                       "LOCATION (re-provision with --force)", None: "registry: NOT REGISTERED (run civicedge "
                       "provision)"}[match])
        if args.db is not None:
            def probe() -> dict[str, Any] | None:
                return first_report_from_db(args.db, ident.id)
        else:
            def probe() -> dict[str, Any] | None:
                return first_report_from_http(args.gateway, ident.id)
        started = time.monotonic()
        with _steps(out) as step:
            step(f"wait for the first report of {ident.id} at the gateway")
            wait_first_report(probe, device_id=ident.id, timeout_s=args.timeout)
        out.print(f"gateway accepted a report from {ident.id} ({time.monotonic() - started:.0f} s)")
        return 0 if state.ok and registry_ok else EXIT_PROBLEM
    return EXIT_ERROR


# --------------------------------------------------------------------------------------------- helpers
def _open_retrying(port: str, *, timeout_s: float) -> Dut:
    """After esptool's reset MicroPython needs a moment to boot (and the USB port to come back)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return open_board(port, timeout_s=min(5.0, timeout_s))
        except FieldError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


@contextmanager
def _steps(out: Console) -> Iterator[Callable[[str], None]]:
    """A rich progress display: each call starts a step and completes the previous one."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=out,
                  transient=False) as progress:
        current: list[TaskID] = []

        def step(name: str) -> None:
            if current:
                progress.update(current[-1], completed=1)
            current.append(progress.add_task(name, total=1))

        yield step
        if current:
            progress.update(current[-1], completed=1)


@contextmanager
def _errors(out: Console) -> Iterator[None]:
    """Turn our errors into one ``error:`` line on stderr (the caller then returns EXIT_ERROR)."""
    try:
        yield
    except (HilError, BoardError) as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"error: {exc}", markup=False)
        log.debug("failed: %s", type(exc).__name__)
