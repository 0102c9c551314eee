"""``civicedge boards``: list board definitions with their capabilities, show or check one."""

from __future__ import annotations

import argparse
import json
import logging

from hil.boards.errors import BoardError
from hil.boards.loader import list_boards, load_board

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``boards`` command group."""
    parser = subparsers.add_parser("boards", help="board definitions: list, show, check")
    sub = parser.add_subparsers(dest="boards_command", metavar="ACTION")
    ls = sub.add_parser("list", help="list the board definitions with chip, kind and capabilities")
    ls.add_argument("--json", action="store_true", help="one JSON object per board")
    ls.set_defaults(func=_list)
    show = sub.add_parser("show", help="print the /board.json a board gets (validated)")
    show.add_argument("board", help="board name or path of a .toml file")
    show.set_defaults(func=_show)
    check = sub.add_parser("check", help="validate board files; exit 1 with the error if one is invalid")
    check.add_argument("boards", nargs="+", help="board names or paths of .toml files")
    check.set_defaults(func=_check)
    parser.set_defaults(func=_list, json=False)


def _list(args: argparse.Namespace) -> int:
    status = 0
    for name in list_boards():
        try:
            board = load_board(name)
        except BoardError as exc:
            print(f"{name}: INVALID: {exc}")
            status = 1
            continue
        if getattr(args, "json", False):
            print(json.dumps({"name": board.name, "chip": board.chip, "kind": board.kind,
                              "capabilities": sorted(board.capabilities)}))
        else:
            print(f"{board.name:<22} {board.chip:<8} {board.kind:<12} {', '.join(sorted(board.capabilities))}")
    return status


def _show(args: argparse.Namespace) -> int:
    try:
        board = load_board(args.board)
    except BoardError as exc:
        print(f"error: {exc}")
        return 1
    print(json.dumps(board.to_device_config(), indent=2))
    return 0


def _check(args: argparse.Namespace) -> int:
    status = 0
    for item in args.boards:
        try:
            board = load_board(item)
        except BoardError as exc:
            print(f"error: {exc}")
            status = 1
        else:
            print(f"ok: {board.name} ({board.chip}, {board.kind}; {', '.join(sorted(board.capabilities))})")
    return status
