"""``civicedge gateway retention [--confirm]``: show whether retention is held, and release it."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path

from gateway.cli.common import EXIT_ERROR, EXIT_OK, add_config_arg, atomic_text_file, config_from, fail
from gateway.errors import GatewayError
from gateway.retention_clock import CONFIRM_FILE, META_KEY
from gateway.storage.sqlite_uri import read_only_uri


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``retention``."""
    ret = sub.add_parser(
        "retention", help="show whether retention is held; --confirm releases it",
        description="Show whether the gateway holds retention (a clock found far ahead of the stored data, or a "
                    "pass that would remove more than half of a field's values: docs/gateway.md, Storage). "
                    "--confirm tells the gateway, running or at its next start, that its clock and retention are "
                    "right: its next pass (within a minute while held) removes what it finds, for good.")
    add_config_arg(ret)
    ret.add_argument("--confirm", action="store_true",
                     help="confirm the gateway clock and retention: the next retention pass runs even if held")
    ret.set_defaults(func=cmd_retention)


def held_state(db: Path) -> str | None:
    """What the store says retention is held for (one line), or None when it is not held.

    Raises:
        sqlite3.Error: the store cannot be read.
    """
    if not db.exists():
        return None
    conn = sqlite3.connect(read_only_uri(db), uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (META_KEY,)).fetchone()
    finally:
        conn.close()
    hold = None if row is None else json.loads(row[0]).get("hold")
    if not isinstance(hold, dict):
        return None
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(hold.get("since", 0))))
    return "retention held since %s (gateway clock): %s" % (since, hold.get("detail", hold.get("reason")))


def cmd_retention(args: argparse.Namespace) -> int:
    """Print the hold (if any); with ``--confirm`` write the confirmation the gateway reads."""
    try:
        config = config_from(args)
    except GatewayError as exc:
        return fail(exc)
    try:
        held = held_state(config.storage.path)
    except (sqlite3.Error, ValueError) as exc:
        print("error (read_failed): cannot read the retention state of %s: %s" % (config.storage.path, exc),
              file=sys.stderr)
        return EXIT_ERROR
    print(held or "retention is not held")
    if args.confirm:
        path = config.data_dir / CONFIRM_FILE
        try:
            with atomic_text_file(path) as fh:
                fh.write("confirmed %s\n" % time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
        except OSError as exc:
            print("error (write_failed): cannot write %s: %s" % (path, exc), file=sys.stderr)
            return EXIT_ERROR
        print("confirmed (%s): the gateway's next retention pass removes what it finds, for good" % path)
    return EXIT_OK
