"""``civicedge sim ...``: run virtual boards from the command line.

``civicedge sim up --board NAME [--id ID] [--flash DIR] [--speed X] [--seed N] [--stimuli FILE] --json``
prints one JSON line describing the board (console/data pty paths, BLE address, flash dir) and
runs until SIGINT/SIGTERM. ``civicedge sim fleet --count N --board NAME --json`` prints one line
per board (boards spread over one Node process per CPU core). ``civicedge sim install-runtime [--dir DIR]``
installs the simulator's Node packages for an installed wheel (:mod:`hil.sim.runtime`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import signal
import sys
from pathlib import Path
from typing import Any

from hil.errors import HilError

logger = logging.getLogger(__name__)


def _speed(text: str) -> float | None:
    """``--speed``: a finite number >= 0 (0 is ``max``), ``max`` or ``paused`` (None)."""
    if text == "max":
        return 0.0
    if text == "paused":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"speed must be a finite number >= 0 (virtual seconds per wall second), "
                                         f"'max' or 'paused', got {text!r}")
    return value


def _start_ms(text: str) -> int:
    from hil.sim.stimuli import parse_at_ms
    import time

    try:
        return parse_at_ms(text, int(time.time() * 1000))
    except HilError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"seed must be an integer, got {text!r}") from exc


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _device_id(text: str) -> str:
    """A device id the wire format and the registry accept (it also names the flash directory)."""
    from gateway.protocol.frame import valid_device_id

    if not valid_device_id(text) or not text.strip("."):
        raise argparse.ArgumentTypeError(f"device id must be 1..32 chars of ASCII letters, digits, . _ - (not only dots), "
                                         f"got {text!r}")
    return text


def _id_prefix(text: str) -> str:
    _device_id(f"{text}-0001")  # ids are PREFIX-0001 ...
    return text


def _stimuli_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no stimuli file {text!r}" + (" (a directory)" if path.is_dir() else ""))
    return path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``sim up``, ``sim fleet`` and ``sim install-runtime`` to the ``civicedge`` parser."""
    raw = argparse.RawDescriptionHelpFormatter
    sim = subparsers.add_parser(
        "sim", help="virtual boards (real MicroPython, simulated hardware)", formatter_class=raw,
        description="Run virtual boards: our firmware on the real MicroPython interpreter (its\n"
                    "WebAssembly port, run by Node from hil/sim/) with simulated sensors, a console\n"
                    "pty that speaks the REPL, a data UART pty and optionally a BLE peripheral on a\n"
                    "virtual radio. Needs Node and the simulator's Node packages: scripts/setup\n"
                    "installs them in a checkout, `civicedge sim install-runtime` for an installed\n"
                    "wheel. See docs/simulator.md.")
    sub = sim.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--board", required=True, help="board name (boards/NAME.toml) or path")
        p.add_argument("--speed", type=_speed, default=1.0,
                       help="virtual seconds per wall second; 'max' = as fast as possible; 'paused' = the clock moves "
                            "only when advanced (Python API) (default 1)")
        p.add_argument("--seed", type=_seed, help="deterministic os.urandom/fault randomness, an integer (simulation "
                                                  "only; default: none, the host's CSPRNG)")
        p.add_argument("--start", type=_start_ms,
                       help="virtual start time: ISO 8601 (e.g. 2026-01-01T18:00:00Z, UTC when no zone), HH:MM "
                            "(next such UTC time) or +DURATION from now (default: %s)" % (
                                "the --stimuli file's start if it sets one, else the wall clock now"
                                if p.prog.endswith(" up") else "the wall clock now"))
        p.add_argument("--radio", help="virtual BLE radio URL (boards with BLE get a peripheral; default: none, "
                                       "no BLE)")
        p.add_argument("--no-install", action="store_true", help="do not copy firmware/ into the flash")
        p.add_argument("--unthrottled", action="store_true", help="data UART not paced at the baud rate")
        p.add_argument("--json", action="store_true", help="print JSON lines")

    up = sub.add_parser(
        "up", help="start one virtual board and run until stopped", formatter_class=raw,
        description="Start one virtual board and run it until SIGINT/SIGTERM (Ctrl-C). Prints one\n"
                    "line (with --json a JSON object) naming its console and data ptys, BLE address\n"
                    "and flash directory; mpremote, pyserial or the gateway open those ptys like USB\n"
                    "serial ports.\n"
                    "\n"
                    "example:\n"
                    "  civicedge sim up --board streetlight-esp32 --id sl-0001 --flash var/sl-0001")
    common(up)
    up.add_argument("--id", type=_device_id,
                    help="device id (provisions /identity.json with a random key if missing; default: the id the "
                         "flash's identity holds, else an unprovisioned board named vb-<random>)")
    up.add_argument("--flash", type=Path, help="flash directory, locked while the board runs: one board at a time, "
                                               "of the kind whose identity it holds (default: a temporary directory)")
    up.add_argument("--stimuli", type=_stimuli_file,
                    help="stimuli file (TOML) with values, timelines and faults (default: none)")
    up.set_defaults(func=_cmd_up)

    fleet = sub.add_parser(
        "fleet", help="start many virtual boards and run until stopped", formatter_class=raw,
        description="Start --count provisioned virtual boards of one board definition, spread over\n"
                    "Node processes, and run them until SIGINT/SIGTERM (Ctrl-C). Prints one line per\n"
                    "board (with --json a JSON object) as `civicedge sim up` does.\n"
                    "\n"
                    "example:\n"
                    "  civicedge sim fleet --board bin-esp32c3 --count 20 --id-prefix bin --json")
    common(fleet)
    fleet.add_argument("--count", type=_positive_int, required=True, help="number of boards")
    fleet.add_argument("--id-prefix", type=_id_prefix, default="vb",
                       help="ids are PREFIX-0001 ... (provisioned; default vb: vb-0001 ...)")
    fleet.add_argument("--flash-root", type=Path, help="flash directories go under here (default: temp)")
    fleet.add_argument("--processes", type=_positive_int, help="Node processes (default: one per CPU core)")
    fleet.set_defaults(func=_cmd_fleet)

    install = sub.add_parser(
        "install-runtime", help="install the simulator's Node packages (npm ci) for an installed civicedge",
        formatter_class=raw,
        description="Install the simulator's Node packages with `npm ci` from the package.json and\n"
                    "package-lock.json civicedge ships, into a per-user directory (a pip-installed\n"
                    "civicedge cannot count on writing its own package directory). Needs Node >= 20.6\n"
                    "and npm, and the npm registry. A checkout does not need it: scripts/setup\n"
                    "installs them in hil/sim/node_modules.\n"
                    "\n"
                    "The simulator looks for them in hil/sim/node_modules, then in\n"
                    "$CIVICEDGE_SIM_RUNTIME, then in $XDG_DATA_HOME/civicedge/sim-runtime\n"
                    "(~/.local/share/civicedge/sim-runtime); a directory installed for another\n"
                    "civicedge version is not used (run this again after an upgrade: it does nothing\n"
                    "when the runtime is current, and a failed run keeps the runtime there was).\n"
                    "\n"
                    "example:\n"
                    "  civicedge sim install-runtime\n"
                    "  civicedge sim install-runtime --dir /opt/civicedge/sim-runtime  "
                    "# then CIVICEDGE_SIM_RUNTIME=/opt/civicedge/sim-runtime")
    install.add_argument("--dir", type=Path,
                         help="directory to install into (default: $CIVICEDGE_SIM_RUNTIME if set, else "
                              "$XDG_DATA_HOME/civicedge/sim-runtime, i.e. ~/.local/share/civicedge/sim-runtime)")
    install.add_argument("--force", action="store_true",
                         help="reinstall even when the directory already holds the runtime for this civicedge")
    install.set_defaults(func=_cmd_install_runtime)
    sim.set_defaults(func=lambda args: (sim.print_help(), 2)[1])


def _stop_event() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM (installed before anything is printed, so no signal is lost)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _print(args: argparse.Namespace, info: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(info), flush=True)
    else:
        print(f"{info['id']} ({info['board']}): console {info['console']}  data {info['data']}  "
              f"ble {info['ble_address']}  flash {info['flash']}", flush=True)


async def _up(args: argparse.Namespace) -> int:
    from hil.sim.board import VirtualBoard
    from hil.sim.host import SimHost
    from hil.sim.stimuli import BoardIo, load_stimuli

    stop = _stop_event()
    start_ms = args.start
    if args.stimuli is not None and start_ms is None:
        # A stimuli file may fix the virtual start time (determinism: same start, same reports).
        from hil.boards import load_board
        import time
        plan = load_stimuli(args.stimuli, BoardIo(load_board(args.board).to_device_config()), int(time.time() * 1000))
        start_ms = plan.start_ms
    host = SimHost(speed=args.speed, start_ms=start_ms)
    board = VirtualBoard(args.board, device_id=args.id, flash_dir=args.flash, host=host, seed=args.seed,
                         install=not args.no_install, paced=not args.unthrottled, radio_url=args.radio,
                         check_kind=True)
    try:
        board.claim_flash()  # refused (another board on the flash, another kind's) before Node starts
        await host.start()
        await board.start()
        if args.stimuli is not None:
            await board.load_stimuli(args.stimuli)
        _print(args, board.info())
        await stop.wait()
    finally:
        await board.stop()
        await host.close()
    return 0


async def _fleet(args: argparse.Namespace) -> int:
    from hil.sim.fleet import Fleet

    stop = _stop_event()
    fleet = Fleet(args.board, count=args.count, id_prefix=args.id_prefix, flash_root=args.flash_root,
                  processes=args.processes, speed=args.speed, seed=args.seed, start_ms=args.start,
                  install=not args.no_install, paced=not args.unthrottled, radio_url=args.radio, check_kind=True)
    try:
        await fleet.start(on_board=lambda b: _print(args, b.info()))
        await stop.wait()
    finally:
        await fleet.stop()
    return 0


def _run(coro_fn: Any, args: argparse.Namespace) -> int:
    from hil.sim.errors import FlashInUseError, FlashKindError

    try:
        return int(asyncio.run(coro_fn(args)))
    except (FlashInUseError, FlashKindError) as exc:  # refused before a board started on the flash
        print(f"civicedge sim {args.sim_command}: {exc}", file=sys.stderr)
        return 2
    except HilError as exc:
        print(f"civicedge sim: {exc}", file=sys.stderr)
        return 1


def _check_inputs(args: argparse.Namespace, command: str) -> int | None:
    """Check the board (and stimuli file) before anything starts: 2 with a message when bad, else None."""
    from hil.boards import BoardError, load_board
    from hil.sim.stimuli import BoardIo, load_stimuli

    try:
        board = load_board(args.board)
    except BoardError as exc:
        print(f"civicedge sim {command}: --board: {exc}", file=sys.stderr)
        return 2
    if command == "up" and args.id is not None and args.flash is not None:
        from hil.sim.flash import identity_id

        held = identity_id(Path(args.flash))
        if held is not None and held != args.id:
            print(f"civicedge sim up: --id {args.id}: the flash {args.flash} already holds the identity of {held}, "
                  f"which the board runs as; drop --id, or give another --flash", file=sys.stderr)
            return 2
    if command == "up" and args.flash is not None:
        from hil.sim.flash import flash_kind_problem

        problem = flash_kind_problem(Path(args.flash).resolve(), board=board.name, kind=board.kind,
                                     install=not args.no_install)
        if problem is not None:
            print(f"civicedge sim up: --flash: {problem}", file=sys.stderr)
            return 2
    stimuli = getattr(args, "stimuli", None)
    if stimuli is not None:
        import time

        try:
            load_stimuli(stimuli, BoardIo(board.to_device_config()), int(time.time() * 1000))
        except HilError as exc:
            print(f"civicedge sim {command}: --stimuli {stimuli}: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"civicedge sim {command}: --stimuli {stimuli}: cannot read: {exc.strerror}", file=sys.stderr)
            return 2
    return None


def _cmd_install_runtime(args: argparse.Namespace) -> int:
    from hil.sim import runtime

    target = args.dir if args.dir is not None else runtime.install_dir()

    def announce(into: Path) -> None:  # only once the checks passed: a refused install is not "installing"
        print(f"installing the simulator's Node packages into {into} (npm ci)...", flush=True)

    try:
        result = runtime.install_runtime(target, force=args.force, announce=announce)
    except runtime.RuntimeInstallError as exc:
        print(f"civicedge sim install-runtime: {exc}", file=sys.stderr)
        return 1
    installed = result.path
    if result.already_installed:
        print(f"already installed: {installed}/node_modules is the runtime of this civicedge (--force to "
              "reinstall)", flush=True)
    else:
        print(f"installed: {installed}/node_modules", flush=True)
    note = runtime.usage_note(installed)  # installed where the lookup does not reach, or behind another runtime
    if note is not None:
        print(f"note: {note}", flush=True)
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    bad = _check_inputs(args, "up")
    return bad if bad is not None else _run(_up, args)


def _cmd_fleet(args: argparse.Namespace) -> int:
    bad = _check_inputs(args, "fleet")
    return bad if bad is not None else _run(_fleet, args)
