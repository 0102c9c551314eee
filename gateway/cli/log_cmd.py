"""``civicedge gateway export-log`` and ``civicedge gateway verify-log FILE`` (provenance chain)."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sqlite3
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

from gateway.cli.common import EXIT_ERROR, EXIT_OK, add_config_arg, atomic_text_file, config_from, fail
from gateway.config import GatewayConfig, default_config
from gateway.errors import GatewayError, ProvenanceError, StorageError
from gateway.output_guard import GatewayFiles, OutputRefused, check_output
from gateway.storage.damage import damaged_error, is_corrupt
from gateway.storage.provenance import (ChainSummary, archive_files, export_chain_summary, one_shot_read,
                                          verify_export_summary)

_HASH = re.compile(r"[0-9a-f]{64}\Z")


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``export-log`` and ``verify-log``."""
    exp = sub.add_parser("export-log", help="export the provenance hash chain as JSON Lines",
                         description="Export the provenance chain as JSON Lines; the entry count and the final "
                                     "hash (head) go to stderr.")
    add_config_arg(exp)
    exp.add_argument("--db", type=Path, help="report store (default: the config's [storage] path)")
    exp.add_argument("-o", "--output", metavar="FILE",
                     help="output file, replaced only once the export is complete (default, or -: stdout); an "
                          "existing file is replaced only if it is empty or an earlier export (else --force); "
                          "the gateway's own files and SQLite databases are always refused; a FIFO or a device "
                          "(/dev/stdout) is written into")
    exp.add_argument("--force", action="store_true",
                     help="replace an existing --output file that is not an earlier export (never a gateway "
                          "file or a database)")
    exp.set_defaults(func=cmd_export)
    ver = sub.add_parser("verify-log", help="verify an exported provenance log; exit 1 at the first broken link",
                         description="Verify every link of an exported provenance log and print its entry count "
                                     "and final hash (head). A log cut off at its end still links: compare the "
                                     "head with a saved one or the gateway's (--expect-head, --expect-count).")
    ver.add_argument("file", type=Path, help="exported log, or - for standard input")
    ver.add_argument("--expect-head", type=_chain_hash, metavar="HEX",
                     help="fail unless the log ends at this hash (as printed by export-log or verify-log)")
    ver.add_argument("--expect-count", type=_count, metavar="N", help="fail unless the log holds exactly N entries")
    ver.add_argument("--after", type=_chain_hash, metavar="HEX",
                     help="fail unless the log continues after this hash: the head of the archive before it "
                          "(archive-log); a log that starts with a checkpoint line is verified without it too "
                          "(with a note), but only together with the archive ending at that hash does it prove "
                          "the whole chain, so with --expect-head or --expect-count it is required")
    ver.add_argument("--allow-empty", action="store_true",
                     help="accept an empty log (what export-log writes for a store with no reports); without it, "
                          "or an expectation (--expect-count, --expect-head) to compare it with, empty input is "
                          "an error: a failed export upstream of a pipe")
    ver.set_defaults(func=cmd_verify)


def _chain_hash(text: str) -> str:
    value = text.strip().lower()
    if not _HASH.match(value):
        raise argparse.ArgumentTypeError("must be a chain hash (64 hex characters), got %r" % text)
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError("must be a whole number of entries (0 or more), got %r" % text)
    return value


def _error(reason: str, message: str) -> int:
    print("error (%s): %s" % (reason, message), file=sys.stderr)
    return EXIT_ERROR


def _store_problem(db: Path) -> tuple[str, str] | None:
    """Return ``(reason, message)`` when ``db`` cannot be exported from, before any output is made."""
    try:
        with one_shot_read(db) as conn:  # one snapshot (or <db>.lock held shared where the read is immutable)
            row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='chain'").fetchone()
    except sqlite3.Error as exc:
        if is_corrupt(exc) and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_CORRUPT:  # NOTADB: not a store
            return "corrupt", str(damaged_error(db, exc, "reading its schema"))
        if isinstance(exc, sqlite3.OperationalError):
            return "read_failed", "cannot read the report store %s: %s" % (db, exc)
        return "not_a_store", "%s is not a civicedge report database" % db
    if row is None:
        return "not_a_store", "%s is not a civicedge report database (it has no provenance chain table)" % db
    return None


def _protected(args: argparse.Namespace, db: Path, config: GatewayConfig | None) -> GatewayFiles:
    """The gateway files ``-o`` must never replace: those of the store exported, of its data directory
    (the usual layout: registry and retention.json next to it) and of the config (or the defaults)."""
    files = GatewayFiles()
    files.add_store(db)
    files.add_registry(db.parent / "registry")
    files.add_data_dir(db.parent)
    for archive in archive_files(db):  # its entries are no longer in the store: replacing it would lose them
        files.add(Path(archive), "an archive of the store's provenance chain (archive-log)")
    if args.config is not None:
        files.add(Path(args.config), "the gateway's config file")
    if config is None:  # --db given: the config's files (if any) are the gateway's all the same
        try:
            config = config_from(args, read_only=True) if args.config is not None else default_config(read_only=True)
        except GatewayError:
            config = None  # not needed to export from --db; its store cannot be told, the header check stays
    if config is not None:
        files.add_config(config)
    return files


def _target_problem(args: argparse.Namespace, output: Path, db: Path, config: GatewayConfig | None, *, command: str,
                    word: str, force: bool, previous: Callable[[Path], bool], kind: str) -> tuple[str, str] | None:
    """Why ``output`` cannot take what ``command`` (``export-log``, ``archive-log``) writes, as ``(reason,
    message)`` in its ``word`` (``export``, ``archive``), or None; checked before anything is written.

    Refused: a directory, the report store ``db`` itself (also through a symlink), and what
    :func:`gateway.output_guard.check_output` refuses: the gateway's files (:func:`_protected`), SQLite
    databases, and an existing file that is not ``previous`` (an earlier output of ``kind``) unless ``force``.
    """
    target = Path(os.path.realpath(output))
    if target.is_dir():
        return "bad_path", "%s is a directory; give the %s a file name" % (output, word)
    if target.exists() and os.path.samefile(target, db):
        return "bad_path", "%s is the report store itself; %s to another file" % (output, word)
    try:  # the gateway's files and databases before "exists": those reasons say more
        check_output(output, _protected(args, db, config), force=force, previous=previous, command=command,
                     kind=kind)
    except OutputRefused as exc:
        return exc.reason, exc.message
    return None


def _is_export(path: Path) -> bool:
    """Whether ``path`` is evidently an earlier export: its first line verifies as a chain's first entry."""
    try:
        with path.open("rb") as fh:
            first = fh.readline(1 << 16)
        verify_export_summary([first.decode("utf-8")])
    except (OSError, UnicodeDecodeError, ProvenanceError):
        return False
    return True


@contextlib.contextmanager
def _output_stream(output: Path, target: Path) -> Iterator[IO[str]]:
    """The stream the export goes to: an existing FIFO or device (``/dev/null``, ``/dev/stdout``) opened as
    given and written into (replacing it would put a regular file in its place, and ``/dev/stdout`` has no
    directory to put one in); else :func:`atomic_text_file` on ``target``, the file ``output`` resolves to.

    Raises:
        OSError: ``output`` cannot be looked at, opened or written.
    """
    try:
        st = os.stat(output)  # follows /dev/stdout -> /proc/self/fd/1 -> the pipe, which realpath cannot
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        with open(output, "w", encoding="utf-8") as fh:
            yield fh
        return
    with atomic_text_file(target) as fh:
        yield fh


def _is_stream(output: Path) -> bool:
    """Whether ``output`` is written into as a stream (a FIFO, a device: :func:`_output_stream`), whose writes
    may block for as long as its reader pleases."""
    try:
        st = os.stat(output)
    except OSError:
        return False
    return not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)


class SpoolFailed(GatewayError):
    """The export could not be written to its temporary file (TMPDIR full or not writable): ``write_failed``."""


def _export_spooled(db: Path, out: IO[str]) -> ChainSummary:
    """Export the chain of ``db`` to a temporary file first (in ``TMPDIR``, unlinked), then copy it to ``out``.

    Written straight into a pipe (``export-log | less``) the store read would last as long as the reader
    takes: its snapshot would keep the gateway's checkpoints from emptying the -wal, and a read under the
    shared hold on ``<db>.lock`` (a store in a directory this user cannot write) would refuse a gateway's start
    meanwhile. Spooled, the store read ends as soon as the chain is read.

    Raises:
        SpoolFailed: the temporary file could not be made or written.
        StorageError, sqlite3.Error: as :func:`export_chain_summary`.
        OSError: writing ``out`` (BrokenPipeError: its reader went away).
    """
    try:
        spool = tempfile.TemporaryFile("w+", encoding="utf-8", prefix="civicedge-export-")
    except OSError as exc:
        raise SpoolFailed("cannot make a temporary file for the export in %s: %s"
                          % (tempfile.gettempdir(), exc.strerror or exc), reason="write_failed") from exc
    try:
        try:
            summary = export_chain_summary(db, spool)
        except (StorageError, sqlite3.Error):
            _copy(spool, out)  # the entries read before the failure, as an export written straight out gave them
            raise
        except OSError as exc:
            raise _spool_failed(exc) from exc
        _copy(spool, out)  # the store is closed (and any hold given back) by now
    finally:
        # After a failed write the file still buffers what did not fit: closing it tries that write again, whose
        # OSError must not replace the error that says what happened. (A temporary file loses nothing closed so.)
        with contextlib.suppress(OSError):
            spool.close()
    return summary


def _spool_failed(exc: OSError) -> SpoolFailed:
    return SpoolFailed("cannot write the export to a temporary file in %s (set TMPDIR to a directory with room, or "
                       "give -o FILE): %s" % (tempfile.gettempdir(), exc.strerror or exc), reason="write_failed")


def _copy(spool: IO[str], out: IO[str]) -> None:
    """Copy what ``spool`` holds to ``out`` (from its start).

    Raises:
        SpoolFailed: the spool's last buffered write failed (its file system full).
        OSError: writing ``out``.
    """
    try:
        spool.flush()
    except OSError as exc:
        raise _spool_failed(exc) from exc
    spool.seek(0)
    shutil.copyfileobj(spool, out, 1 << 16)
    out.flush()


def _is_regular_file(out: IO[str]) -> bool:
    """Whether ``out`` is an open regular file (``export-log > FILE``): written straight, as no reader can hold
    the export (and the store read) up, and a spool would only cost room in TMPDIR."""
    try:
        return stat.S_ISREG(os.fstat(out.fileno()).st_mode)
    except (OSError, ValueError):  # no file descriptor (a test's captured stdout): spooled as a pipe would be
        return False


def store_of(args: argparse.Namespace) -> tuple[Path, GatewayConfig | None]:
    """The report store ``--db`` names, else the one of ``--config``'s gateway (with that config); raises
    :class:`GatewayError` for a config that does not load."""
    if args.db is not None:
        return Path(args.db), None
    config = config_from(args, read_only=True)
    return config.storage.path, config


def checked_store(args: argparse.Namespace) -> tuple[Path, GatewayConfig | None]:
    """The report store a chain command reads or archives (:func:`store_of`), with its config, once it is known
    to be a civicedge store whose provenance chain can be read: the prologue ``export-log`` and
    ``archive-log`` share, run before any output is made (:func:`_store_problem`).

    Raises:
        GatewayError: the config does not load (its ConfigError), or a StorageError: ``open_failed`` (no file
            at the store's path), ``corrupt``, ``read_failed`` or ``not_a_store``.
    """
    db, config = store_of(args)
    if not db.is_file():
        raise StorageError("no report store at %s" % db, reason="open_failed")
    problem = _store_problem(db)
    if problem is not None:
        reason, message = problem
        raise StorageError(message, reason=reason)
    return db, config


def cmd_export(args: argparse.Namespace) -> int:
    """Export the chain to stdout or, atomically, to ``--output``."""
    try:
        db, config = checked_store(args)
    except GatewayError as exc:
        return fail(exc)
    if args.output is None or args.output == "-":  # `-o -`: stdout, as verify-log reads `-` (./- is a file)
        try:
            # A reader that goes away (`| head`) raises BrokenPipeError: the civicedge entry point
            # ends quietly on it, like a unix tool.
            if _is_regular_file(sys.stdout):
                summary = export_chain_summary(db, sys.stdout)
                sys.stdout.flush()  # a full disk said here, not at exit
            else:
                summary = _export_spooled(db, sys.stdout)
        except SpoolFailed as exc:
            return _error("write_failed", str(exc))
        except StorageError as exc:  # corrupt: the damaged entry or SQLite's message, and where
            return _error(exc.reason, str(exc))
        except sqlite3.Error as exc:
            return _error("read_failed", "cannot read the report store %s: %s" % (db, exc))
        except BrokenPipeError:
            raise  # the civicedge entry point ends quietly on it
        except OSError as exc:  # stdout a regular file on a full disk
            return _error("write_failed", "cannot write the export to stdout: %s" % (exc.strerror or exc))
    else:
        output = Path(args.output)
        problem = _target_problem(args, output, db, config, command="export-log", word="export", force=args.force,
                                  previous=_is_export, kind="an earlier provenance log export")
        if problem is not None:
            return _error(*problem)
        # Through a symlink, replace the file it points to, not the link.
        target = Path(os.path.realpath(output))
        try:
            stream = _is_stream(output)  # a FIFO or device: spooled, as stdout
            with _output_stream(output, target) as fh:
                summary = _export_spooled(db, fh) if stream else export_chain_summary(db, fh)
        except SpoolFailed as exc:
            return _error("write_failed", "%s (%s left unchanged)" % (exc, output))
        except StorageError as exc:
            return _error(exc.reason, "%s (%s left unchanged)" % (exc, output))
        except sqlite3.Error as exc:
            return _error("read_failed", "cannot read the report store %s (%s left unchanged): %s" % (db, output, exc))
        except OSError as exc:
            return _error("write_failed", "cannot write %s: %s" % (output, exc.strerror or exc))
    if summary.continues:  # older entries archived (archive-log): the first line is the checkpoint
        print("exported %d entries (pos %d to %d) after the archived pos %d, hash %s; head %s"
              % (summary.count, summary.after_pos + 1, summary.after_pos + summary.count, summary.after_pos,
                 summary.after, summary.head), file=sys.stderr)
    else:
        print("exported %d entries, head %s" % (summary.count, summary.head), file=sys.stderr)
    return EXIT_OK


def _utf8_lines(stream: IO[bytes]) -> Iterator[str]:
    """Decode ``stream`` line by line, naming the first line that is not UTF-8."""
    for lineno, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProvenanceError("line %d is not valid UTF-8 text (byte 0x%02x at column %d)"
                                  % (lineno, raw[exc.start], exc.start + 1), reason="syntax", line=lineno) from None


def _verify(file: Path, after: str | None = None) -> ChainSummary:
    if str(file) == "-":
        return verify_export_summary(_utf8_lines(sys.stdin.buffer), after=after)
    with file.open("rb") as fh:
        return verify_export_summary(_utf8_lines(fh), after=after)


def _mismatch(summary: ChainSummary, args: argparse.Namespace) -> str | None:
    """Say how ``summary`` differs from ``--expect-count``/``--expect-head``, or None."""
    wanted = []
    if args.expect_count is not None and summary.count != args.expect_count:
        wanted.append("%d entries" % args.expect_count)
    if args.expect_head is not None and summary.head != args.expect_head:
        wanted.append("head %s" % args.expect_head)
    if not wanted:
        return None
    short = args.expect_count is not None and summary.count < args.expect_count
    hint = " (the input is empty: did the export fail?)" if summary.count == 0 else (
        " (entries missing at the end?)" if short else "")
    return "the chain links but has %d entries, head %s; expected %s%s" % (summary.count, summary.head,
                                                                          " and ".join(wanted), hint)


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify an export (a file or ``-`` for stdin) and compare its end with what is expected."""
    try:
        summary = _verify(args.file, args.after)
    except OSError as exc:
        return _error("bad_path", "cannot read %s: %s" % (args.file, exc.strerror or exc))
    except ProvenanceError as exc:
        print("BROKEN at line %d (%s): %s" % (exc.line, exc.reason, exc))
        return EXIT_ERROR
    expected = args.expect_count is not None or args.expect_head is not None
    if summary.count == 0 and not args.allow_empty and not expected:
        # `export-log ... | verify-log -` printed OK for the nothing a failed export wrote. With an
        # expectation, the empty log is judged by it like any other: MISMATCH unless it expects 0
        # entries or the GENESIS head (which only an empty log ends at).
        return _error("empty", "no log entries to verify: the input is empty (did the export fail?); the log of "
                               "a store without reports is empty too: pass --allow-empty (or --expect-count 0)")
    if summary.continues and args.after is None and expected:
        # --expect-head/--expect-count only say where the log ends: a log whose oldest entries are missing
        # must not pass them on its own checkpoint line's word (archive-log's H1 review).
        return _error("continuation", "the log starts after pos %d, hash %s (its first line is a checkpoint: the "
                                      "entries before are in an archive, or missing), so --expect-head/--expect-count "
                                      "cannot prove the chain from its start: give --after <the head of the archive "
                                      "before it> (verify that archive with verify-log ARCHIVE --expect-head ...)"
                                      % (summary.after_pos, summary.after))
    mismatch = _mismatch(summary, args)
    if mismatch is not None:
        print("MISMATCH: %s" % mismatch)
        return EXIT_ERROR
    if not summary.continues:
        print("OK: %d entries, chain intact, head %s" % (summary.count, summary.head))
        return EXIT_OK
    print("OK: %d entries (pos %d to %d), chain intact after pos %d, hash %s, head %s"
          % (summary.count, summary.after_pos + 1, summary.after_pos + summary.count, summary.after_pos,
             summary.after, summary.head))
    if args.after is None:
        print("note: this log continues an archived part (its first line is a checkpoint): it proves the chain "
              "from its start only with the archive ending at that hash (verify-log ARCHIVE --expect-head %s); "
              "give --after HASH to require it" % summary.after, file=sys.stderr)
    return EXIT_OK
