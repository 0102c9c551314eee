"""``civicedge flash``: MicroPython (esptool) and the civicedge firmware onto a board.

Every failure ends with one ``error:`` line saying what to do, and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rich.console import Console

from gateway.resources import boards_dir
from hil.boards import BOARDS_PATH_ENV, BoardDefinition, load_board
from hil.boards import CHIPS as BOARD_CHIPS
from hil.dut import Dut
from hil.dut.errors import DutError
from hil.errors import HilError
from hil.field.board_facts import check_definition_fits, read_board_facts
from hil.field.chips import CHIPS, chip_profile
from hil.field.cli_common import EXIT_ERROR, errors, say, seconds
from hil.field.cli_steps import steps
from hil.field.device import open_board, read_identity
from hil.field.errors import (
    BoardFullError, BoardNotAnsweringError, DamagedIdentityError, DeviceIOError, FieldError, FirmwareStartError,
    PortBusyError, PortNotFoundError, PortPermissionError,
)
from hil.field.esp_flash import FlashStep, execute_flash, plan_flash
from hil.field.firmware_copy import copy_firmware, firmware_version, read_manifest, verify_manifest
from hil.field.firmware_restart import START_WATCH_S, restart, restart_step, watch_start
from hil.field.identity import Identity
from hil.field.ports import check_port_available, require_port

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``flash`` to the ``civicedge`` command line."""
    flash = subparsers.add_parser(
        "flash", help="flash MicroPython and the civicedge firmware onto a board",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a MicroPython release image onto a board over USB serial (esptool; the flash\n"
                    "is erased first unless --no-erase), then copy the civicedge firmware (compiled to\n"
                    "the board's .mpy version), its /board.json and manifest, and verify every file by\n"
                    "hash. Needs the board definition and the MicroPython image for its chip\n"
                    "(micropython.org/download):\n"
                    + "".join(f"  {chip:<9} {image}\n" for chip, image in micropython_images().items()) +
                    "Next: civicedge provision. See docs/field.md.\n"
                    "\n"
                    "example:\n"
                    "  civicedge flash --board streetlight-esp32 --port /dev/ttyUSB0 \\\n"
                    "      --micropython ESP32_GENERIC-v1.27.0.bin")
    flash.add_argument("--board", required=True, help=f"board definition: a name (<name>.toml in a {BOARDS_PATH_ENV} "
                                                      "directory, else the shipped boards) or a path")
    flash.add_argument("--port", required=True, help="serial port of the board (e.g. /dev/ttyUSB0)")
    flash.add_argument("--micropython", type=Path,
                       help="MicroPython release image (.bin) for the chip (required unless --firmware-only)")
    flash.add_argument("--no-erase", action="store_true",
                       help="do not erase the flash before writing MicroPython: the board keeps its identity and stored "
                            "state (not with --firmware-only; default: erase)")
    flash.add_argument("--firmware-only", action="store_true", help="skip esptool: MicroPython is already there; only update our firmware")
    flash.add_argument("--source", action="store_true", help="copy .py sources instead of compiled .mpy")
    flash.add_argument("--repl-timeout", type=seconds, default=20.0,
                       help="seconds to wait for the REPL (default: %(default)g)")
    flash.set_defaults(func=_flash, parser=flash)


def _flash(args: argparse.Namespace) -> int:
    out = Console(highlight=False, markup=False, soft_wrap=True)
    if args.firmware_only:
        # Options that only mean something to the esptool step would be silently ignored.
        for given, name in ((args.micropython is not None, "--micropython"), (args.no_erase, "--no-erase")):
            if given:
                args.parser.error(f"{name} does nothing with --firmware-only (MicroPython is not rewritten); "
                                  "drop one of them")
    with errors():
        require_port(args.port)
        definition = load_board(args.board)
        chip = chip_profile(definition.chip)
        firmware_version()  # a VERSION the gateway would refuse stops here, before MicroPython is rewritten
        done = _FlashProgress()
        with steps(out) as step, _interrupted(args, done):
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
            # Closed on every path, a refusal too: a port left open keeps pyserial's exclusive lock (the
            # next command in this process, or a test's, finds it busy) until the garbage collector runs.
            with dut:
                copying = False

                def on_progress(name: str) -> None:
                    nonlocal copying
                    copying = copying or name.startswith("sync ")  # from here on files on the board change
                    done.writing_started = done.writing_started or copying
                    step(name)

                def on_copied(copied: int, to_copy: int) -> None:
                    done.count(copied, to_copy)
                    step.count(copied, to_copy)

                try:
                    step("check the board")
                    check_definition_fits(read_board_facts(dut), definition, port=args.port)
                    try:
                        result = copy_firmware(dut, board_config=definition.to_device_config(), source_only=args.source,
                                               on_progress=on_progress, on_copied=on_copied)
                    except BoardFullError as exc:
                        raise BoardFullError(f"{exc}: {_flash_command(args)}", **exc.details) from None
                except BaseException as exc:
                    _after_failed_flash(dut, args, copying=copying, interrupted=isinstance(exc, KeyboardInterrupt),
                                        done=done)
                    raise
                identity, damaged = _identity_after_flash(dut)
                restarted, fatal = False, None
                if identity is not None:
                    # A provisioned board (a street light) must not stay dark at the REPL until its
                    # watchdog resets it: the new firmware runs with the identity it has.
                    restarted = restart_step(dut, args.repl_timeout, step)
                    if restarted:
                        step("watch the firmware start")
                        fatal = watch_start(dut, START_WATCH_S)
        origin = definition_origin(definition, args.board)
        out.print(f"flashed {definition.name}{f' ({origin})' if origin else ''} on {args.port}: "
                  f"firmware as {result.mode} "
                  f"(device .mpy v{result.device_mpy}), {len(result.copied) + done.copied_before} files copied, "
                  f"{max(0, len(result.unchanged) - done.copied_before)} unchanged, all verified by hash")
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


def micropython_images() -> dict[str, str]:
    """MicroPython's generic release image for each chip a board definition can name and the flasher
    knows (:data:`hil.boards.CHIPS` and :data:`hil.field.chips.CHIPS`), as micropython.org names them:
    ``{"esp32": "ESP32_GENERIC-*.bin", "esp32c3": "ESP32_GENERIC_C3-*.bin", ...}``."""
    images: dict[str, str] = {}
    for name, profile in sorted(CHIPS.items()):
        if name in BOARD_CHIPS:
            images[name] = profile.micropython_image
    return images


def definition_origin(definition: BoardDefinition, given: str) -> str | None:
    """Where a board definition that is not a shipped board was read from, for the ``flashed`` line (a
    technician's log must say which file described the board); None for a shipped board.

    Args:
        definition: the loaded definition.
        given: the ``--board`` value: a file (loaded by path) or a name (found through the search path).
    """
    source = definition.source.resolve()
    if source.parent == boards_dir().resolve():
        return None
    if Path(given).is_file():  # load_board takes an existing file as it is, before any name lookup
        return f"definition {source}"
    return f"definition {source}, found through {BOARDS_PATH_ENV}"


def _identity_after_flash(dut: Dut) -> tuple[Identity | None, bool]:
    """The board's identity after a flash, and whether its ``/identity.json`` is damaged."""
    try:
        return read_identity(dut), False
    except DamagedIdentityError:
        return None, True


def _after_failed_flash(dut: Dut, args: argparse.Namespace, *, copying: bool, interrupted: bool,
                        done: "_FlashProgress | None" = None) -> None:
    """A refused, failed or interrupted ``flash`` restarts the firmware it stopped, unless it left it incomplete.

    Before the copy started, or when an interrupted copy had found every file up to date (0 to copy),
    nothing of the firmware changed: it runs again as before (a street light must not stay dark until its watchdog
    resets it). After, only firmware whose files still all match its ``/firmware.json`` is restarted;
    broken code is not started, and that is said. An interrupted copy is checked so only when it had
    not replaced a file yet (it may have removed the other mode's twins); after that it is incomplete.
    A dead link is noticed within seconds (not after the retries of a manifest check) and said as such:
    whether the firmware is whole cannot be told then. ``done`` gets whether the firmware was found
    intact and restarted (for the interruption's message).
    """
    done = done if done is not None else _FlashProgress()
    # An interrupted sync that had nothing to copy changed no file (a failed one is checked: its verify
    # may have failed on a file that changed under it).
    intact = not copying or (interrupted and done.to_copy == 0)
    unknown = False
    # A retried sync that wrote nothing yet is not "nothing written" when an earlier attempt had written files
    # (new ones, maybe, that the old manifest does not list): incomplete, not checked against that manifest.
    if not intact and (not interrupted or not (done.copied or done.copied_before)):
        try:
            if not _link_answers(dut):
                raise DeviceIOError(f"no answer on {args.port}", port=args.port)
            manifest = read_manifest(dut)
            intact = manifest is not None and not verify_manifest(dut, {str(k): str(v) for k, v
                                                                       in manifest["files"].items()})
        except (HilError, KeyError) as exc:
            log.info("cannot tell whether the firmware on %s is intact: %s", args.port, exc)
            unknown = True
    if intact:
        done.firmware_intact = True
        try:
            restart(dut, args.repl_timeout)
            done.firmware_restarted = True
            log.info("firmware on %s restarted", args.port)
        except HilError as exc:
            say(f"warning: could not restart the firmware: {exc}")
    elif unknown:
        say(f"could not check the firmware on {args.port} (link lost), so it was not restarted; once the board "
            f"answers again, re-run to repair it: {_flash_command(args)}")
    elif not interrupted:  # an interruption says so itself (_interrupted)
        say(f"the firmware on {args.port} is incomplete, so it was not restarted (it would not start); "
            f"re-run to repair it: {_flash_command(args)}")


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


@dataclass
class _FlashProgress:
    """How far ``flash`` got, for the message of an interrupted run."""

    erase_started: bool = False
    writing_started: bool = False  # esptool erased or wrote, or the firmware copy changed a file
    to_copy: int | None = None  # files the copy's sync found differing (None: it had not hashed them yet)
    copied: int = 0  # of those, written
    copied_before: int = 0  # files written by earlier attempts of the sync (retried after a link error)
    firmware_intact: bool = False  # a failed or interrupted copy left the firmware whole (nothing of it changed)
    firmware_restarted: bool = False  # ... and restarted it

    def count(self, copied: int, to_copy: int) -> None:
        """The sync wrote ``copied`` of the ``to_copy`` files it found differing. A retried sync starts
        again at 0 with only the files still differing: what the earlier attempt wrote is kept apart."""
        if copied == 0 and self.to_copy is not None:
            self.copied_before += self.copied
        self.to_copy, self.copied = to_copy, copied


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
            say("interrupted: nothing was written to the board (its MicroPython, firmware and identity are as "
                f"they were); re-run: {_flash_command(args)}")
            raise
        if done.firmware_intact and not done.erase_started:
            mp = "" if args.firmware_only else "MicroPython was written; "
            restarted = ("the firmware is intact and was restarted" if done.firmware_restarted else
                         "the firmware is intact but could not be restarted (press RESET)")
            if done.copied_before and done.to_copy == 0:
                # A retried sync had found nothing left to copy: files did change, into the new firmware's.
                say(f"interrupted: {mp}every firmware file on the board already matches the new firmware "
                    f"({done.copied_before} copied before a retry) but its manifest was not written: {restarted}; "
                    f"its identity, if any, is kept; re-run to finish: {_flash_command(args)}")
                raise
            counted = "" if done.to_copy is None else f" ({done.copied} of {done.to_copy} copied)"
            say(f"interrupted: {mp}no firmware file on the board was changed{counted}: {restarted}; its identity, "
                f"if any, is kept; re-run to update it: {_flash_command(args)}")
            raise
        written = "firmware" if args.firmware_only else "MicroPython or firmware"
        if done.erase_started:
            identity = ("the erase had started, so its identity and files may be gone: after the re-run, provision "
                        f"it again (civicedge provision --port {shlex.quote(args.port)} --id ITS-ID ... --take-over: "
                        "the registry still holds the key the erase removed)")
        else:
            identity = "its identity, if any, is kept"
        say(f"interrupted: the board may hold a partly written {written} and may not start until it is flashed "
            f"again; {identity}; re-run to repair it: {_flash_command(args)}")
        raise
