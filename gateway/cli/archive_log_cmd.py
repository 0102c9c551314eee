"""``civicedge gateway archive-log``: move the oldest provenance chain entries out of the store into a file.

The archive is the export-log format (``verify-log FILE --expect-head H --expect-count N`` verifies it); see
gateway.storage.chain_archive for the order of the steps that keeps a crash from losing anything. The command
writes the live store, which only one process does at a time: it takes the store's single-writer lock, so a
running gateway is refused (stop it first, as for ``restore``) and a gateway started meanwhile waits on nothing
but refuses to start (``in_use``) until the archive is done.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import stat
import sys
from pathlib import Path

from gateway.cli.common import EXIT_OK, add_config_arg, config_from, fail
from gateway.cli.log_cmd import _error, _target_problem, checked_store
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, StorageError
from gateway.storage.chain_archive import ArchiveResult, archive_chain, plan
from gateway.storage.lock_holders import command_of
from gateway.storage.lock_holders import flock_pids as _flock_pids  # moved: store_files and restore use it too
from gateway.storage.restore_marker import check_no_restore_marker
from gateway.storage.schema import SCHEMA_VERSION, stored_version
from gateway.storage.store_files import lock_store, real_store_path, store_writer


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``archive-log``."""
    arc = sub.add_parser(
        "archive-log", help="move the oldest provenance chain entries into a verifiable archive file",
        description="Write the provenance chain's entries up to a position to a new file, in the format export-log "
                    "writes, sync it, then remove those entries from the store and record a checkpoint there. "
                    "The head entry always stays. Later exports continue after the checkpoint: verify-log ARCHIVE, "
                    "then verify-log LIVE --after <archive head>. The gateway must be stopped.")
    add_config_arg(arc)
    arc.add_argument("--db", type=Path, help="report store (default: the config's [storage] path)")
    which = arc.add_mutually_exclusive_group(required=True)
    which.add_argument("--before", type=_position, metavar="POS",
                       help="archive the entries before pos POS (POS at most the head entry's pos, which export-log "
                            "prints as the last pos; the head entry stays)")
    which.add_argument("--keep", type=_position, metavar="N",
                       help="archive all but the newest N entries (N from 1)")
    arc.add_argument("-o", "--output", required=True, metavar="FILE",
                     help="the archive: a new file (an existing one is never replaced: it may be an earlier "
                          "archive); the gateway's own files and SQLite databases are refused")
    arc.set_defaults(func=cmd_archive)


def _position(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("must be a whole number from 1, got %r" % text)
    return value


def _output_problem(args: argparse.Namespace, db: Path, config: GatewayConfig | None) -> tuple[str, str] | None:
    """Why ``--output`` cannot be the archive, as ``(reason, message)``, or None (before anything is written)."""
    output = Path(args.output)
    if args.output == "-":
        return "bad_path", "an archive goes to a file (its entries leave the store): give -o FILE, not -"
    # the gateway's files and databases first (any file passes as an earlier archive there): those reasons say
    # more than "exists" below
    problem = _target_problem(args, output, db, config, command="archive-log", word="archive", force=False,
                              previous=lambda _p: True, kind="an archive")
    if problem is not None:
        return problem
    target = Path(os.path.realpath(output))
    if os.path.lexists(output) or os.path.lexists(target):
        try:
            regular = stat.S_ISREG(os.stat(target).st_mode)
        except OSError:
            regular = True  # a dangling symlink: refused below all the same
        if not regular:
            return "bad_path", "%s is not a regular file: an archive must be a file of its own, synced and kept" % output
        return "exists", ("%s exists; archive-log never replaces a file (it may be an earlier archive, whose entries "
                          "are no longer in the store): give a new file name; nothing was archived" % output)
    if not target.parent.is_dir():
        return "bad_path", "cannot write %s: its directory %s does not exist" % (output, target.parent)
    return None


def cmd_archive(args: argparse.Namespace) -> int:
    """Archive the chain up to ``--before``/``--keep`` into ``--output``; print what was done on stderr."""
    try:
        db, config = checked_store(args)
    except GatewayError as exc:
        return fail(exc)
    problem = _output_problem(args, db, config)
    if problem is not None:
        return _error(*problem)
    real = real_store_path(db)
    try:
        owner = os.stat(real).st_uid
    except OSError as exc:
        return _error("open_failed", "cannot look at the report store %s: %s" % (db, exc.strerror or exc))
    if owner != os.geteuid():
        # SQLite's -wal and -shm made here would be this user's: the gateway refuses such files (not_owned).
        return _error("not_owned", "the report store %s belongs to uid %d, not to this user (uid %d): run archive-log "
                                   "as the gateway's user (sudo -u civicedge ...); nothing was archived"
                                   % (db, owner, os.geteuid()))
    try:  # a restore cut off in its swap: the store may be half old, half restored (as run and backup refuse)
        check_no_restore_marker(config.data_dir if config is not None else db.parent)
    except StorageError as exc:
        return _error(exc.reason, "%s; nothing was archived" % exc)
    if store_writer(db) is not None:
        return _running(db, real)
    try:
        lock = lock_store(db, real)
    except StorageError as exc:
        if exc.reason == "in_use":
            return _running(db, real)
        return _error(exc.reason, str(exc))
    try:
        result = _archive(args, real)
    except StorageError as exc:
        return _error(exc.reason, str(exc))
    except sqlite3.Error as exc:
        return _error("read_failed", "cannot read the report store %s: %s; nothing was archived" % (db, exc))
    finally:
        os.close(lock)
    _report(result, Path(args.output))
    return EXIT_OK


def _archive(args: argparse.Namespace, real: Path) -> ArchiveResult:
    """Under the store's lock: check the schema, plan, write and trim."""
    conn = sqlite3.connect(str(real), isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")  # a reader (export-log, backup) may be checkpointed around
        version = stored_version(conn)
        if version is not None and version > SCHEMA_VERSION:
            raise StorageError("the report store %s has schema version %d, newer than this civicedge's %d: archive it "
                               "with that version; nothing was archived" % (real, version, SCHEMA_VERSION),
                               reason="schema_too_new")
        first, upto = plan(conn, before=args.before, keep=args.keep)
        return archive_chain(conn, Path(os.path.realpath(args.output)), first=first, upto=upto)
    finally:
        conn.close()


def _running(db: Path, real: Path) -> int:
    """Refuse a store whose lock another process holds: a writer (gateway, backup, restore, another archive-log)
    holds it exclusively, readers (export-log, verify-log's store reads) shared."""
    lock = real.with_name(real.name + ".lock")
    writer = store_writer(db)
    if writer is not None:
        pid = writer if writer.isdigit() else ""
        return _error("in_use", "report store %s is in use by another civicedge process (pid %s%s): archive-log writes "
                                "the store, which only one process may do; a gateway must be stopped (systemctl stop "
                                "civicedge-gateway), a backup, restore or archive-log be let finish; then archive "
                                "again; nothing was archived" % (db, writer, command_of(pid)))
    readers = [pid for pid in _flock_pids(lock) if pid != str(os.getpid())]
    shown = ", ".join("pid %s%s" % (pid, command_of(pid)) for pid in readers[:3]) or "pid unknown"
    return _error("in_use", "report store %s is being read by another civicedge command (%s; export-log and "
                            "verify-log hold its lock shared while they read a store in a directory they cannot "
                            "write): archive again once it has finished; "
                            "nothing was archived" % (db, shown))


def _report(result: ArchiveResult, output: Path) -> None:
    s = result.summary
    if result.already is not None:
        print("note: the store already recorded an archive of the entries up to pos %d with the same head (%s; they "
              "were put back since): %s is a copy of it, not recorded again" % (result.upto, result.already, output),
              file=sys.stderr)
    after = " --after %s" % s.after if s.continues else ""
    print("archived %d entries (pos %d to %d), head %s, to %s (sha256 %s)" % (s.count, result.first, result.upto,
                                                                             s.head, output, result.sha256),
          file=sys.stderr)
    print("the store's chain now continues after pos %d; check the archive with: civicedge gateway verify-log %s "
          "--expect-head %s --expect-count %d%s; and the live log with: ... export-log ... | civicedge gateway "
          "verify-log - --after %s" % (result.upto, output, s.head, s.count, after, s.head), file=sys.stderr)
