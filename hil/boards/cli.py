"""``civicedge boards``: list board definitions with their capabilities, show or check one."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from gateway.resources import boards_dir
from hil.boards.errors import BoardError
from hil.boards.errors import BoardFileNotFoundError
from hil.boards.loader import load_board
from hil.boards.search import BOARDS_PATH_ENV, SHIPPED, BoardDirectory, board_search_path, find_board_files

logger = logging.getLogger(__name__)

EXIT_INVALID = 1  # a board definition is invalid, or unknown by name
EXIT_USAGE = 2  # a file given by path does not exist (as for `civicedge hil validate`)
EXIT_NO_BOARDS = 1  # the boards directory holds no definitions: an incomplete installation


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``boards`` command group."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = subparsers.add_parser(
        "boards", help="board definitions: list, show, check", formatter_class=raw,
        description="Board definitions (boards/*.toml) say which chip a board has, what is wired to\n"
                    "which pin, its links, calibration and capabilities; `civicedge flash` and the\n"
                    "simulator write them to the board as /board.json. Without an action: list.")
    sub = parser.add_subparsers(dest="boards_command", metavar="ACTION")
    ls = sub.add_parser(
        "list", help="list the board definitions with chip, kind and capabilities", formatter_class=raw,
        description="List the board definitions: name, chip, kind, capabilities and where each comes\n"
                    f"from (a directory of {BOARDS_PATH_ENV}, searched first, or the shipped boards), one\n"
                    "per line. An invalid one is listed as INVALID with the reason (exit status 1).\n"
                    "No shipped definitions at all (an incomplete installation) is an error too (exit 1).\n"
                    "\n"
                    "example:\n"
                    f"  {BOARDS_PATH_ENV}=/srv/site-boards civicedge boards list")
    ls.add_argument("--json", action="store_true", help="one JSON object per board")
    ls.set_defaults(func=_list)
    show = sub.add_parser(
        "show", help="print the /board.json a board gets (validated)", formatter_class=raw,
        description="Validate a board definition and print, as JSON, the /board.json that\n"
                    "`civicedge flash` and the simulator write to the board. Exit 1 when it is\n"
                    "unknown or invalid.\n"
                    "\n"
                    "example:\n"
                    "  civicedge boards show streetlight-esp32")
    show.add_argument("board", help="board name or path of a .toml file")
    show.set_defaults(func=_show)
    check = sub.add_parser(
        "check", help="validate board files; exit 1 with the error if one is invalid", formatter_class=raw,
        description="Validate board definitions (names or .toml files): chip, pins, links,\n"
                    "calibration, sleep and app settings. Prints 'ok' or every problem of the board\n"
                    "(one 'error:' line each, with its dotted key). Without arguments: every board\n"
                    f"`civicedge boards list` shows (the shipped ones and those of {BOARDS_PATH_ENV}).\n"
                    "Exit 0: all valid; 1: one is invalid, no board has that name, or there are no\n"
                    "board definitions; 2: a file given by path does not exist.\n"
                    "\n"
                    "examples:\n"
                    "  civicedge boards check\n"
                    "  civicedge boards check boards/*.toml my-board.toml")
    check.add_argument("boards", nargs="*",
                       help="board names or paths of .toml files (default: every board of `boards list`)")
    check.set_defaults(func=_check)
    parser.set_defaults(func=_list, json=False)


def _every_board() -> dict[str, tuple[Path, BoardDirectory]] | None:
    """Every board of the search path (``CIVICEDGE_BOARDS``'s directories, then the shipped one) by name,
    or None after printing why there is none to list or check (exit 1 either way)."""
    folder = boards_dir()
    try:
        dirs = board_search_path(folder)
    except BoardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if not any(folder.glob("*.toml")):
        # An installation always ships board definitions: none means boards/ is missing or emptied,
        # and every command that needs a board will fail. Exit 1 so a script does not take the empty
        # output for an empty but healthy list.
        print(f"error: no board definitions in {folder} (boards/*.toml); the installation is incomplete: "
              "reinstall civicedge, or restore boards/ in the checkout", file=sys.stderr)
        return None
    return find_board_files(dirs)


def _list(args: argparse.Namespace) -> int:
    boards = _every_board()
    if boards is None:
        return EXIT_NO_BOARDS  # == EXIT_INVALID, what a bad search path exits with too
    status = 0
    for name, (path, where) in sorted(boards.items()):
        origin = SHIPPED if where.origin == SHIPPED else f"{where.origin}: {where.path}"
        try:
            board = load_board(path)
        except BoardError as exc:
            more = len(exc.problems) - 1
            print(f"{name}: INVALID: {exc}" + (f" (and {more} more: civicedge boards check {path})" if more else ""))
            status = EXIT_INVALID
            continue
        if getattr(args, "json", False):
            print(json.dumps({"name": board.name, "chip": board.chip, "kind": board.kind,
                              "capabilities": sorted(board.capabilities), "origin": where.origin,
                              "file": str(path), "warnings": list(board.warnings)}))
        else:
            # board.name, as --json and /board.json say; a file named otherwise carries a warning saying so
            print(f"{board.name:<22} {board.chip:<8} {board.kind:<12} {', '.join(sorted(board.capabilities))}  [{origin}]")
            for warning in board.warnings:
                print(f"  warning: {warning}")
    return status


def _show(args: argparse.Namespace) -> int:
    try:
        board = load_board(args.board)
    except BoardFileNotFoundError as exc:
        print(f"error: {exc}")
        return EXIT_USAGE
    except BoardError as exc:
        _print_problems(exc)
        return EXIT_INVALID
    print(json.dumps(board.to_device_config(), indent=2))
    return 0


def _check(args: argparse.Namespace) -> int:
    status = 0
    items: list[str] = args.boards
    if not items:
        boards = _every_board()
        if boards is None:
            return EXIT_NO_BOARDS
        items = [str(path) for _, (path, _) in sorted(boards.items())]
    for item in items:
        try:
            board = load_board(item)
        except BoardFileNotFoundError as exc:
            print(f"error: {exc}")
            status = max(status, EXIT_USAGE)
        except BoardError as exc:
            _print_problems(exc)
            status = max(status, EXIT_INVALID)
        else:
            print(f"ok: {board.name} ({board.chip}, {board.kind}; {', '.join(sorted(board.capabilities))})")
            for warning in board.warnings:
                print(f"warning: {board.source}: {warning}")
    return status


def _print_problems(exc: BoardError) -> None:
    """Every problem of the file, one ``error:`` line each (the first is ``exc`` itself)."""
    for problem in exc.problems:
        print(f"error: {problem}")
    if len(exc.problems) > 1:
        print(f"{exc.source}: {len(exc.problems)} problems")
