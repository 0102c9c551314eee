"""What ``civicedge flash`` / ``provision`` / ``check`` share: exit statuses, the ``--json`` record,
the one ``error:`` line and the lines for the person at the terminal."""

from __future__ import annotations

import argparse
import json
import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console

from hil.boards import BoardError
from hil.errors import HilError

log = logging.getLogger(__name__)
EXIT_PROBLEM = 1
EXIT_ERROR = 2

JSON_COMMANDS = ("provision", "check")  # the commands with --json
USAGE_ERROR = "invalid arguments (see stderr)"  # argparse prints the message itself


def seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


def say(line: str) -> None:
    """A line for the person at the terminal on stderr (a warning, what a Ctrl-C left), never markup."""
    Console(stderr=True, highlight=False, markup=False, soft_wrap=True).print(line)


@contextmanager
def errors(record: dict[str, Any] | None = None) -> Iterator[None]:
    """Turn our errors into one ``error:`` line on stderr (the caller then returns EXIT_ERROR);
    ``record`` (``--json``) gets ``result: error`` and the message."""
    try:
        yield
    except (HilError, BoardError) as exc:
        if record is not None:
            record.update(result="error", error=str(exc))
        say(f"error: {exc}")
        log.debug("failed: %s", type(exc).__name__)


def _json_record(**fields: Any) -> dict[str, Any]:
    """A ``--json`` record: ``result: error`` until the command says otherwise."""
    return {"id": None, "port": None, "fingerprint": None, "result": "error", **fields}


def usage_error_json(argv: list[str], code: int | str | None) -> None:
    """``--json`` promises one JSON object on stdout whatever happens: for a usage error argparse found
    in ``argv`` of a :data:`JSON_COMMANDS` command, print it (with ``exit`` ``code``)."""
    command = next((w for w in argv if not w.startswith("-")), None)
    if "--json" in argv and command in JSON_COMMANDS:
        print(json.dumps(_json_record(exit=code, error=USAGE_ERROR), sort_keys=True), flush=True)


def with_json(args: argparse.Namespace, run: Callable[[argparse.Namespace, Console, dict[str, Any]], int]) -> int:
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
