"""Entry point of the ``civicedge`` console script.

Each command group lives next to the code it drives and exposes
``register(subparsers) -> None``; this module only collects them, so that
layers stay independent (the gateway does not import the harness to get a CLI).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import IO, Any, Callable, Sequence

from gateway.errors import GatewayError
from gateway.log_time import LINE_FORMAT, IsoTimeFormatter
from gateway.systemd import journal_prefix, stderr_is_journal
from gateway.version import gateway_version
from hil.cli.extras import COMMANDS_OF_MODULE, add_unavailable, extra_for, report_missing_extra
from hil.cli.text import safe_streams

# (module, description) — each module defines register(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "hil.cli.demo_cmd",          # civicedge demo
    "hil.sim.cli",               # civicedge sim ...
    "hil.cli.hil_cmd",           # civicedge hil run ...
    "hil.field.cli",             # civicedge flash / provision / check
    "gateway.cli",               # civicedge gateway ...
    "gateway.routes.cli",        # civicedge routes ...
    "hil.boards.cli",            # civicedge boards list / show / check
    "hil.cli.docs_cmd",          # civicedge docs [NAME [--show]] | --unit | --alerts
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available command group."""
    parser = argparse.ArgumentParser(
        prog="civicedge",
        description=(
            "civicedge: privacy-preserving city sensors. Flash and provision boards, run virtual "
            "boards, run the city gateway, run hardware-in-the-loop tests."
        ),
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log detail: -v info, -vv civicedge debug, -vvv debug of the libraries too "
                             "(default: warnings only)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A command group whose optional extra is not installed is listed, and says which extra
            # it needs when run (hil.cli.extras).
            missing = extra_for(exc)
            if missing is not None and name in COMMANDS_OF_MODULE:
                for command in COMMANDS_OF_MODULE[name]:
                    add_unavailable(sub, command, *missing)
                continue
            # Only skip a command group that does not exist yet; a broken import inside
            # an existing module must surface.
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        register: Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None] = getattr(module, "register")
        register(sub)
    _add_version(parser, "civicedge " + gateway_version())
    _add_verbose(parser)
    return parser


# The dest of ``-v`` given after the subcommand at depth N (``civicedge gateway -v devices -vv list``):
# one per depth, so that a nested subcommand's count does not overwrite its parent's; summed by verbosity().
VERBOSE_AFTER = "verbose_after_"


def _add_verbose(parser: argparse.ArgumentParser, depth: int = 0) -> None:
    """Give every subcommand under ``parser`` the top level's ``-v``/``--verbose``: ``civicedge provision
    ... -v`` logs as ``civicedge -v provision ...`` does (and both together add up). A subcommand with its
    own ``-v`` (``gateway run``, which adds it to the top level's) and one that only says which extra it
    needs (it takes any argument) are left as they are."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in set(action.choices.values()):
            own = any(option in ("-v", "--verbose") for a in child._actions for option in a.option_strings)
            if not own and child.get_default("missing_extra") is None:
                child.add_argument("-v", "--verbose", dest=f"{VERBOSE_AFTER}{depth + 1}", action="count",
                                   default=argparse.SUPPRESS,
                                   help="more log detail, as civicedge -v: -v info, -vv civicedge debug, -vvv "
                                        "debug of the libraries too (default: warnings only)")
            _add_verbose(child, depth + 1)


def verbosity(args: argparse.Namespace) -> int:
    """How many ``-v`` the command line gave, before the subcommand and after it (at any depth)."""
    return int(getattr(args, "verbose", 0) or 0) + sum(
        int(value) for name, value in vars(args).items() if name.startswith(VERBOSE_AFTER))


def _add_version(parser: argparse.ArgumentParser, text: str) -> None:
    """Give ``parser`` and every subcommand under it ``--version``: ``civicedge gateway run --version``
    answers as ``civicedge --version`` does (the installed distribution's version)."""
    if not any("--version" in action.option_strings for action in parser._actions):
        parser.add_argument("--version", action="version", version=text,
                            help="print the civicedge version and exit")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _add_version(child, text)


def selected_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The deepest subcommand's parser that ``args`` (parsed by ``parser``) selected: ``civicedge gateway
    devices add ...`` gives the ``gateway devices add`` parser, ``civicedge --bogus`` the top level.

    Every command group names its subparsers' ``dest`` (``command``, ``gateway_command``, ...): that is
    how the chosen name is found in ``args``.
    """
    while True:
        chosen = None
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and action.dest != argparse.SUPPRESS:
                name = getattr(args, action.dest, None)
                chosen = action.choices.get(name) if isinstance(name, str) else None
                break
        if chosen is None:
            return parser
        parser = chosen


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that an unrecognized argument is reported by the subcommand it
    was given to, with that subcommand's usage (``civicedge gateway run: error: unrecognized arguments:
    --bogus``), not by the top level: argparse's subparsers hand unknown arguments up to the top parser."""
    args, extras = parser.parse_known_args(argv)
    if extras and getattr(args, "missing_extra", None) is None:  # a command without its extra takes any
        selected_parser(parser, args).error("unrecognized arguments: %s" % " ".join(extras))
    if getattr(args, "missing_extra", None) is not None:  # its --json record names the --id and --port given
        args.command_line = list(sys.argv[1:] if argv is None else argv)
    return args


def configure_logging(verbosity: int) -> None:
    """Quiet by default (warnings), ``-v`` info, ``-vv`` debug of civicedge's loggers, ``-vvv`` debug of all.

    When stderr is the journal (``$JOURNAL_STREAM``), lines start with their syslog priority
    (:mod:`gateway.systemd`) and carry no timestamp; elsewhere each starts with its local time and UTC
    offset (:class:`IsoTimeFormatter`).

    Libraries (websockets, Bumble, bleak, aiomqtt/paho, aiohttp) stay at WARNING below ``-vvv``
    (:mod:`gateway.cli.verbosity`).
    """
    from gateway.cli.verbosity import apply_verbosity
    from gateway.systemd import JournalFormatter, stderr_is_journal

    if stderr_is_journal():
        # Under systemd: each line starts with its syslog priority (journalctl -p err); the journal
        # stamps the time itself.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter("%(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(handlers=[handler])
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(IsoTimeFormatter(LINE_FORMAT))
        logging.basicConfig(handlers=[handler])
    apply_verbosity(verbosity)


class JournalMessages:
    """stderr while it is the journal (``$JOURNAL_STREAM``, :func:`gateway.systemd.stderr_is_journal`): a
    message the command prints that starts ``error`` (``error (corrupt): ...``, why ``gateway run`` will not
    start) gets the journal priority of an ERROR log line on each of its lines (``<3>``), one that starts
    ``warning`` that of a WARNING (``<4>``): :func:`gateway.systemd.journal_prefix`, the log handler's own
    mapping, so ``journalctl -p err`` shows it like an ERROR log line. Other text passes unchanged (the journal gives it
    the unit's level); log lines do not pass here (their handler keeps the stream it was given).

    Args:
        stream: the real stderr; everything else (``fileno``, ``encoding``, ...) is its own.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._prefix = ""
        self._line_start = True

    def write(self, text: str) -> int:
        """Write ``text``, each line of an error or warning message starting with its priority."""
        if not text:
            return 0
        if self._line_start:
            self._prefix = (journal_prefix(logging.ERROR) if text.startswith("error")
                            else journal_prefix(logging.WARNING) if text.startswith("warning") else "")
        out = text
        if self._prefix:
            ends = out.endswith("\n")
            out = ("\n" + self._prefix).join((out[:-1] if ends else out).split("\n")) + ("\n" if ends else "")
            if self._line_start:
                out = self._prefix + out
        self._line_start = text.endswith("\n")
        self._stream.write(out)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``civicedge`` command line and return its exit status."""
    # A non-UTF-8 locale (de_DE.ISO-8859-1) cannot encode every name or path we print: escape, never crash.
    safe_streams()
    try:  # building the parser imports every command's module: Ctrl-C there is no traceback either
        parser = build_parser()
        args = parse_command_line(parser, argv)
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:
        if exc.code not in (0, None):
            from hil.field.cli_common import usage_error_json  # already imported by build_parser

            usage_error_json(list(sys.argv[1:] if argv is None else argv), exc.code)
        raise
    args.verbose = verbosity(args)  # what gateway run adds its own -v to
    configure_logging(args.verbose)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    stderr = sys.stderr
    if stderr_is_journal(stderr):
        sys.stderr = JournalMessages(stderr)  # a TextIO by delegation (__getattr__)
    try:
        return _run_command(func, args)
    finally:
        sys.stderr = stderr


def _run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run the chosen command; a :class:`GatewayError` it did not report is reported here."""
    try:
        result: int | None = func(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        # A command that imports an optional extra's module only when it runs (sim, demo, routes plan).
        missing = extra_for(exc)
        if missing is None:
            raise
        command = str(getattr(args, "command", None) or "command")
        sub_command = getattr(args, "hil_command", None)  # "civicedge hil run", not "civicedge hil"
        return report_missing_extra(f"{command} {sub_command}" if sub_command else command, *missing)
    except GatewayError as exc:
        # One a command did not report itself, e.g. a privacy policy the board loader, flash or the
        # simulator read and refused (gateway.policy_rules): said as `gateway run --check` says it.
        from gateway.cli.common import fail

        return fail(exc)
    except BrokenPipeError:
        # The reader went away (`civicedge boards list | head`): stop quietly like a unix tool. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE, what a shell shows for a tool killed by the broken pipe
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
