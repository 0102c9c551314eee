"""``civicedge gateway retention [--confirm]``: show whether retention is held, and release it."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

from gateway.cli.common import EXIT_ERROR, EXIT_OK, add_config_arg, atomic_text_file, config_from, fail
from gateway.errors import GatewayError, StorageError
from gateway.retention_clock import (CONFIRM_FILE, CONFIRM_POLL_S, META_KEY, confirm_command_for, confirm_note,
                                     parse_saved_confirm, parse_saved_state)
from gateway.storage.damage import damaged_error, is_corrupt, sqlite_message
from gateway.storage.sqlite_uri import open_for_check
from gateway.storage.store_files import real_store_path, store_writer
from gateway.storage.store_kind import STORE, store_kind


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``retention``."""
    ret = sub.add_parser(
        "retention", help="show whether retention is held; --confirm releases it",
        description="Show whether the gateway holds retention (a clock found far ahead of the stored data, or a "
                    "pass that would remove more than half of a field's values or of a kind's report rows: "
                    "docs/gateway.md, Storage). "
                    "--confirm tells the gateway, running or at its next start, that its clock and retention are "
                    "right: a running gateway takes it within a few seconds (it looks for the confirmation every "
                    "%g s) and its retention pass then removes what it finds, for good; a stopped one at its next "
                    "start." % CONFIRM_POLL_S)
    add_config_arg(ret)
    ret.add_argument("--confirm", action="store_true",
                     help="confirm the gateway clock and retention: the next retention pass runs even if held")
    ret.set_defaults(func=cmd_retention)


def held_state(db: Path, confirm_command: str = "civicedge gateway retention --confirm") -> str | None:
    """What the store says retention is held for, the operator's confirmation a pass used without finishing
    (or is using, in a running gateway) while held, and the saved forward step of the gateway clock retention
    does not follow (a line each), or None when none is saved. ``confirm_command``: the command named.

    Read as ``gateway run`` reads a store before opening it (:func:`gateway.storage.store_kind.store_kind`,
    then :func:`gateway.storage.sqlite_uri.open_for_check`): nothing beside the file is created or
    removed; a 0-byte file whose ``-wal`` holds pages is refused, never opened (SQLite would delete that
    ``-wal``). A saved state the gateway cannot read either (it then starts its checks afresh, not held)
    is said so.

    Raises:
        StorageError: the store cannot be read: reason ``corrupt`` (damaged), ``open_failed``,
            ``not_a_store`` or ``read_failed``.
    """
    raw = _saved_state(db)
    if raw is None:
        return None
    try:
        hold, _, _, step = parse_saved_state(raw)
    except ValueError as exc:  # as RetentionClock.restore: the gateway then starts afresh, not held
        return _unreadable(str(exc))
    lines = []
    if hold is not None:
        since = ("an unknown time" if hold["since"] is None
                 else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(hold["since"]))))
        lines.append("retention held since %s (gateway clock): %s" % (since, hold.get("detail", hold["reason"])))
        use = parse_saved_confirm(raw)
        if use is not None and use["ended"] is None and store_writer(db) is not None:
            lines.append("the operator's confirmation given at %s is in use: the gateway runs the pass it took at %s "
                         "(gateway clock)" % (_utc(use["given"]), _utc(use["taken"])))
        elif use is not None:  # (ended None, no gateway running: it stopped or was killed during the pass)
            lines.append(confirm_note(use, confirm_command))
    if step is not None and step["offset"] > 0:
        lines.append(_step_line(step))
    return "\n".join(lines) or None


def _utc(t: float | None) -> str:
    return "an unknown time" if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _step_line(step: dict[str, float]) -> str:
    """The saved forward step of the gateway clock (not confirmed), as ``held_state`` shows it."""
    return ("clock step saved: the gateway clock stepped forward by %.1f days (not confirmed; its reading at the "
            "last pass %s): retention removes by the clock less that, and ACKs carry no time to boards whose "
            "clocks disagree, until a step back undoes it or --confirm" % (
                step["offset"] / 86400.0, time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(step["at"]))))


def _unreadable(why: str) -> str:
    return ("retention is not held: its saved state (meta %s) cannot be read (%s); the gateway starts its clock "
            "checks afresh" % (META_KEY, why))


def _saved_state(db: Path) -> str | None:
    """The ``meta`` row :data:`META_KEY` of the store at ``db`` (None when there is no store, or no row)."""
    real = real_store_path(db)
    running = store_writer(db) is not None
    if store_kind(real, running=running) != STORE:
        return None  # absent or empty: nothing is held
    try:
        conn = open_for_check(real, running=running)
        try:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
                return None  # a first start cut off before its meta table
            row = conn.execute("SELECT value FROM meta WHERE key=?", (META_KEY,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if is_corrupt(exc):
            raise damaged_error(db, exc, "reading the retention state") from exc
        raise StorageError("cannot read the retention state of %s: %s" % (db, sqlite_message(exc)),
                           reason="read_failed", sqlite=sqlite_message(exc)) from exc
    return None if row is None else str(row[0])


def cmd_retention(args: argparse.Namespace) -> int:
    """Print the hold (if any); with ``--confirm`` write the confirmation the gateway reads."""
    try:
        config = config_from(args)
    except GatewayError as exc:
        return fail(exc)
    try:
        held = held_state(config.storage.path, confirm_command_for(config.source))
    except StorageError as exc:
        return fail(exc)
    if held is None or held.startswith("clock step saved"):  # (a step without a hold: not held, but said)
        held = "retention is not held" + ("" if held is None else "\n" + held)
    print(held)
    if args.confirm:
        path = config.data_dir / CONFIRM_FILE
        try:
            with atomic_text_file(path) as fh:
                fh.write("confirmed %s\n" % time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
        except OSError as exc:
            print("error (write_failed): cannot write %s: %s" % (path, exc), file=sys.stderr)
            return EXIT_ERROR
        if store_writer(config.storage.path) is not None:
            when = ("the running gateway takes it within %g s (or once a pass in progress ends; after a retention "
                    "pass that failed, at its next pass, up to an interval later)" % CONFIRM_POLL_S)
        else:
            when = "no gateway runs on this store now: the gateway takes it at its next start"
        print("confirmed (%s): %s; its retention pass then removes, for good, what is past its retention by the "
              "gateway clock as it reads then (any forward step it was not following ends) (see its log: "
              "\"retention: the operator confirmed the gateway clock\")" % (path, when))
    return EXIT_OK
