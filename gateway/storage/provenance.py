"""Provenance hash chain over stored reports (issue 7 item 6).

Each stored report appends an entry ``(device, seq, gateway, digest, prev)`` whose ``hash`` is
SHA-256 over a canonical JSON encoding of those fields; ``prev`` is the previous entry's hash
(``GENESIS`` for the first). ``digest`` is the SHA-256 of the report's authenticated frame.
An export is JSON Lines, one entry per line, in chain order; :func:`verify_export` recomputes
every link and names the first broken one. A chain cut off at its end still links, so both sides
also give its :class:`ChainSummary` (entry count and final hash) to compare with a saved one.

A store whose oldest entries were archived (``civicedge gateway archive-log``, gateway.storage.chain_archive)
exports a *continuation*: its first line is a checkpoint ``{"after":{"pos":P,"hash":H}}`` (the last entry
before it), then entries from pos P+1, the first with ``prev`` H. The earlier export that ends at H proves the
entries before; ``verify_export_summary(..., after=H)`` checks that a log continues from exactly there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from gateway.errors import ProvenanceError, StorageError
from gateway.storage.damage import damaged_error, is_corrupt
from gateway.storage.sqlite_uri import ReadHold

GENESIS = "0" * 64
_FIELDS = ("pos", "device", "seq", "gateway", "digest", "prev", "hash")


@dataclass(frozen=True)
class ChainEntry:
    """One link of the provenance chain."""

    pos: int
    device: str
    seq: int
    gateway: str
    digest: str
    prev: str
    hash: str


@dataclass(frozen=True)
class ChainSummary:
    """How far a chain (or an export of it) goes.

    Attributes:
        count: number of entries.
        head: hash of the last entry (``GENESIS`` for an empty chain); it commits to every entry
            before it, so equal heads mean equal chains.
        after_pos: for a continuation, the pos of the last entry before it (0: the log starts at the chain's
            start); its entries are ``after_pos + 1`` to ``after_pos + count``.
        after: for a continuation, the hash its first entry links to (``GENESIS`` otherwise).
    """

    count: int
    head: str
    after_pos: int = 0
    after: str = GENESIS

    @property
    def continues(self) -> bool:
        """Whether the log starts after an archived part (a checkpoint line) rather than at the chain's start."""
        return self.after_pos > 0


# Characters json.dumps writes unchanged inside a string: device ids, hex digests and usual gateway ids.
_VERBATIM = re.compile(r"[A-Za-z0-9 ._:-]*\Z")
# An entry's canonical JSON (sorted keys, no spaces) when every string in it is written verbatim.
_CANON = '{"device":"%s","digest":"%s","gateway":"%s","prev":"%s","seq":%d}'


def entry_hash(*, device: str, seq: int, gateway: str, digest: str, prev: str) -> str:
    """Return the hex SHA-256 hash of one chain entry (canonical JSON, sorted keys)."""
    if type(seq) is int and _VERBATIM.match(device + gateway + digest + prev):
        # Same bytes as the json.dumps below, without building a dict and an encoder per entry
        # (it was the largest Python cost of a stored report).
        canon = _CANON % (device, digest, gateway, prev, seq)
    else:
        canon = json.dumps(
            {"device": device, "seq": seq, "gateway": gateway, "digest": digest, "prev": prev},
            sort_keys=True, separators=(",", ":"),
        )
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def chain_hashes(entries: Iterable[tuple[str, int, str]], gateway: str, prev: str) -> list[str]:
    """The hashes of consecutive chain entries ``(device, seq, digest)`` of ``gateway``, the first after the
    entry hashed ``prev``: each one's :func:`entry_hash` with the hash before it as its ``prev``.

    The same hashes as calling :func:`entry_hash` in turn, for a batch: the gateway id and each device id are
    checked once, and a hash made here (hex) needs no check as the next entry's ``prev``.
    """
    hashes: list[str] = []
    gateway_ok = _VERBATIM.match(gateway) is not None
    prev_ok = _VERBATIM.match(prev) is not None
    devices_ok: dict[str, bool] = {}
    sha256 = hashlib.sha256
    for device, seq, digest in entries:
        device_ok = devices_ok.get(device)
        if device_ok is None:
            device_ok = devices_ok[device] = _VERBATIM.match(device) is not None
        # an ASCII letter-or-digit string (a hex digest) is written unchanged, as _VERBATIM's
        if gateway_ok and prev_ok and device_ok and type(seq) is int and digest.isascii() and digest.isalnum():
            prev = sha256((_CANON % (device, digest, gateway, prev, seq)).encode()).hexdigest()
        else:
            prev = entry_hash(device=device, seq=seq, gateway=gateway, digest=digest, prev=prev)
        prev_ok = True
        hashes.append(prev)
    return hashes


def frame_digest(frame: bytes) -> str:
    """Return the hex SHA-256 of an authenticated frame, as recorded in the chain."""
    return hashlib.sha256(frame).hexdigest()


def last_hash(conn: sqlite3.Connection) -> tuple[int, str]:
    """Return ``(pos, hash)`` of the newest entry, else of the newest archive checkpoint (every entry was
    archived), or ``(0, GENESIS)`` for an empty chain."""
    row = conn.execute("SELECT pos, hash FROM chain ORDER BY pos DESC LIMIT 1").fetchone()
    if row is None:
        row = last_checkpoint(conn)
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


#: The archive checkpoints table (also in gateway.storage.schema.SCHEMA; created here too for a store that a
#: gateway of this release has not opened yet).
CHECKPOINTS_TABLE = """CREATE TABLE IF NOT EXISTS chain_checkpoints (
    pos         INTEGER PRIMARY KEY,
    hash        TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    archived_at REAL    NOT NULL,
    sha256      TEXT    NOT NULL,
    file        TEXT    NOT NULL
)"""


def last_checkpoint(conn: sqlite3.Connection) -> tuple[int, str] | None:
    """``(pos, hash)`` of the last entry of the newest archive (``chain_checkpoints``), or None when the
    store has none (or no such table: a store from before archive-log)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chain_checkpoints'").fetchone() is None:
        return None
    row = conn.execute("SELECT pos, hash FROM chain_checkpoints ORDER BY pos DESC LIMIT 1").fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def has_checkpoint(conn: sqlite3.Connection, pos: int, hash_: str) -> bool:
    """Whether ``chain_checkpoints`` records an archive ending at ``pos`` with the hash ``hash_``: the only
    reason a store's chain may start after pos 1 (False for a store without that table)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chain_checkpoints'").fetchone() is None:
        return False
    return conn.execute("SELECT 1 FROM chain_checkpoints WHERE pos = ? AND hash = ?", (pos, hash_)).fetchone() is not None


@contextlib.contextmanager
def one_shot_read(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection for one command's read of the store, inside ONE read transaction (every
    statement sees the same snapshot), opened as :class:`gateway.storage.sqlite_uri.ReadHold` decides.

    A gateway's live data directory (its lock file there, the directory writable) is read plainly with no hold
    on ``<db>.lock``: the snapshot stays whole while a gateway starts, inserts and checkpoints, or archive-log
    deletes (a checkpoint never passes a reader's snapshot), so a slow reader (``export-log | less``) keeps no
    gateway from starting. A copy without a lock file is read ``immutable=1`` (nothing left beside it); a store
    in a directory this user cannot write keeps ``<db>.lock`` shared until the connection is closed (writers
    refused ``in_use`` meanwhile). Nothing is created but the live store's own ``-wal``/``-shm``.
    """
    with ReadHold(db_path) as hold:
        conn = sqlite3.connect(hold.uri, uri=True, isolation_level=None)
        try:
            conn.execute("BEGIN")  # deferred: the snapshot is taken at the first read and kept to the end
            yield conn
        finally:
            conn.close()  # ends the read transaction


def archive_files(db_path: Path) -> list[str]:
    """The archive files ``chain_checkpoints`` records for the store at ``db_path`` (read-only; [] when it has
    none or cannot be read: the caller's own reads of the store say what is wrong)."""
    try:
        with one_shot_read(db_path) as conn:
            if last_checkpoint(conn) is None:
                return []
            return [str(r[0]) for r in conn.execute("SELECT file FROM chain_checkpoints ORDER BY pos")]
    except sqlite3.Error:
        return []


def iter_chain(conn: sqlite3.Connection, upto: int | None = None) -> Iterator[ChainEntry]:
    """Yield every chain entry in order (with ``upto``, those at pos ``upto`` and before).

    Raises:
        StorageError: reason ``corrupt``: an entry's stored values are not what the gateway writes (an
            integer seq, text device, gateway and 64-hex hashes; bytes changed on disk). The message
            names the entry by its ``pos`` and the last sound entry before it; no value is quoted.
    """
    last: ChainEntry | None = None
    query = "SELECT pos, device, seq, gateway, digest, prev, hash FROM chain"
    rows = conn.execute(query + " ORDER BY pos") if upto is None else conn.execute(
        query + " WHERE pos <= ? ORDER BY pos", (upto,))
    for row in rows:
        bad = _damaged_fields(row)
        if bad:
            after = "the first entry" if last is None else "after entry %d (device %s seq %d)" % (
                last.pos, last.device, last.seq)
            raise StorageError(
                "provenance chain entry at pos %s (%s) is damaged: %s; the store's file was changed on disk "
                "(see docs/gateway.md, Damaged file)" % (row[0], after, "; ".join(bad)), reason="corrupt")
        last = ChainEntry(int(row[0]), row[1], int(row[2]), row[3], row[4], row[5], row[6])
        yield last


# What each stored column of an entry must be, as the gateway writes it.
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def _damaged_fields(row: tuple[object, ...]) -> list[str]:
    """What is wrong with one ``chain`` row, by column (types and hash shapes only, never a value)."""
    bad = []
    for name, value in zip(_FIELDS, row):
        if name in ("pos", "seq"):
            if type(value) is not int:
                bad.append("%s is %s, not an integer" % (name, _sqlite_type(value)))
        elif not isinstance(value, str):
            bad.append("%s is %s, not text" % (name, _sqlite_type(value)))
        elif name in ("prev", "hash") and not _HEX64.match(value):
            bad.append("%s is not a 64-digit hex hash" % name)
    return bad


def _sqlite_type(value: object) -> str:
    """The SQLite storage class of ``value`` as read (``a blob of 64 bytes``), never the value itself."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return "a blob of %d bytes" % len(value)
    return {int: "an integer", float: "a real", str: "text"}.get(type(value), type(value).__name__)


def export_chain(db_path: Path, out: IO[str]) -> int:
    """Write the chain of the store at ``db_path`` to ``out`` as JSON Lines; return the entry count."""
    return export_chain_summary(db_path, out).count


def export_chain_summary(db_path: Path, out: IO[str]) -> ChainSummary:
    """Write the chain as :func:`export_chain` does; return its count and head as written.

    Raises:
        StorageError: reason ``corrupt``: a damaged entry (:func:`iter_chain`), or SQLite finds the file
            damaged (SQLITE_CORRUPT / SQLITE_NOTADB: its message, and how far the export got).
        sqlite3.Error: the store cannot be read otherwise (it is opened read-only, never changed).
    """
    progress = [0]
    try:
        with one_shot_read(db_path) as conn:
            return write_entries(conn, out, progress=progress)
    except sqlite3.Error as exc:
        if is_corrupt(exc):
            raise damaged_error(db_path, exc, "reading the provenance chain after %d entries" % progress[0]) from exc
        raise


def write_entries(conn: sqlite3.Connection, out: IO[str], upto: int | None = None,
                  progress: list[int] | None = None) -> ChainSummary:
    """Write the chain of ``conn`` (up to pos ``upto``) as an export; return its summary as written.

    The first entry not at pos 1 is preceded by the checkpoint line of the entry before it,
    ``{"after":{"pos":P,"hash":H}}`` from its pos and ``prev``, only when ``chain_checkpoints`` records that
    archive (:func:`has_checkpoint`). Oldest entries missing otherwise (removed or lost other than by
    archive-log) are written as they are, without a checkpoint line, so verifying the export fails at its
    first line (``prev_mismatch``), as it did before archives existed. A chain whose every entry was
    archived is written as the newest archive's checkpoint line alone (see the module docstring).
    ``progress[0]``, when given, counts the entries written so far (for an error's message).
    """
    count, head, after_pos, after = 0, GENESIS, 0, GENESIS
    for entry in iter_chain(conn, upto):
        if count == 0 and entry.pos != 1 and has_checkpoint(conn, entry.pos - 1, entry.prev):
            after_pos, after = entry.pos - 1, entry.prev
            out.write(checkpoint_line(after_pos, after))
        out.write(json.dumps({f: getattr(entry, f) for f in _FIELDS}, separators=(",", ":")) + "\n")
        count, head = count + 1, entry.hash
        if progress is not None:
            progress[0] = count
    if count == 0 and upto is None:
        cp = last_checkpoint(conn)
        if cp is not None:
            after_pos, after, head = cp[0], cp[1], cp[1]
            out.write(checkpoint_line(after_pos, after))
    return ChainSummary(count=count, head=head, after_pos=after_pos, after=after)


def checkpoint_line(pos: int, hash_: str) -> str:
    """The first line of a continuation: the log's entries follow the entry at ``pos`` whose hash is ``hash_``."""
    return json.dumps({"after": {"pos": pos, "hash": hash_}}, separators=(",", ":")) + "\n"


def verify_export(lines: Iterable[str]) -> int:
    """Verify an export line by line and return the number of entries (see :func:`verify_export_summary`)."""
    return verify_export_summary(lines).count


def verify_export_summary(lines: Iterable[str], after: str | None = None) -> ChainSummary:
    """Verify an export line by line and return its entry count and final hash.

    Args:
        after: the hash the log must continue from (the head of the archive before it): its first line must
            be a checkpoint line of that hash (``GENESIS``: the log must start at the chain's start). None:
            either is accepted, as the log says (the summary tells which).

    Raises:
        ProvenanceError: at the first broken link, with its 1-based ``line`` and a ``reason``:
            ``syntax`` (not a JSON object, or a malformed checkpoint line), ``missing_field``,
            ``unknown_field`` (a key that is not an entry field: the export writes exactly those; a
            checkpoint line is only the first line), ``pos_mismatch`` (``pos`` is not the entry's place
            in the log: 1 on the first entry, or one more than a checkpoint line's, then one more on each),
            ``prev_mismatch`` (does not link to the previous entry, i.e. an entry was removed, inserted or
            reordered; or the log does not continue from ``after``), ``hash_mismatch`` (the entry's content
            was altered).
    """
    prev = start = GENESIS
    base = count = 0
    first = True
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested arrays
            raise ProvenanceError("line %d is not JSON: %s" % (lineno, exc), reason="syntax", line=lineno) from exc
        if not isinstance(obj, dict):
            raise ProvenanceError("line %d is not a JSON object" % lineno, reason="syntax", line=lineno)
        if first and list(obj) == ["after"]:
            first = False
            base, prev = _checkpoint(obj, lineno)
            start = prev
            if after is not None and prev != after:
                raise ProvenanceError("line %d: the log continues after pos %d, hash %s, not after %s (--after)"
                                      % (lineno, base, prev, after), reason="prev_mismatch", line=lineno)
            continue
        unknown = sorted(str(k) for k in obj if k not in _FIELDS)
        if unknown:
            raise ProvenanceError("line %d has %s, not a field of a chain entry" % (lineno, ", ".join(unknown)),
                                  reason="unknown_field", line=lineno)
        missing = [f for f in _FIELDS if f not in obj]
        if missing:
            raise ProvenanceError("line %d lacks %s" % (lineno, ", ".join(missing)), reason="missing_field", line=lineno)
        if first and after is not None and after != GENESIS:
            raise ProvenanceError(
                "line %d (device %s seq %s) starts the chain, not a continuation after %s (--after): the log has no "
                "checkpoint line" % (lineno, obj["device"], obj["seq"], after), reason="prev_mismatch", line=lineno)
        first = False
        if obj["prev"] != prev:
            raise ProvenanceError(
                "line %d (device %s seq %s) does not link to the previous entry" % (lineno, obj["device"], obj["seq"]),
                reason="prev_mismatch", line=lineno,
            )
        try:
            expected = entry_hash(device=obj["device"], seq=obj["seq"], gateway=obj["gateway"],
                                  digest=obj["digest"], prev=obj["prev"])
        except TypeError as exc:
            raise ProvenanceError("line %d has fields of the wrong type" % lineno, reason="syntax", line=lineno) from exc
        if obj["hash"] != expected:
            raise ProvenanceError(
                "line %d (device %s seq %s) was altered: hash does not match its content" % (lineno, obj["device"], obj["seq"]),
                reason="hash_mismatch", line=lineno,
            )
        # ``pos`` is not hashed: without this check an export's positions could be rewritten unnoticed
        # (checked after the links, so a removed or altered entry is named as such).
        # The first entry links to GENESIS (or the checkpoint), so it is entry 1 (or the checkpoint's pos + 1)
        # of the chain, and positions run on from it.
        if type(obj["pos"]) is not int or obj["pos"] != base + count + 1:
            shown = json.dumps(obj["pos"])
            raise ProvenanceError("line %d has pos %s where entry %d of the chain belongs"
                                  % (lineno, shown if len(shown) <= 24 else shown[:21] + "...", base + count + 1),
                                  reason="pos_mismatch", line=lineno)
        prev = obj["hash"]
        count += 1
    return ChainSummary(count=count, head=prev, after_pos=base, after=start)


def _checkpoint(obj: dict[str, object], lineno: int) -> tuple[int, str]:
    """The ``(pos, hash)`` of a checkpoint line, ``{"after":{"pos":P,"hash":H}}`` exactly (P >= 1)."""
    value = obj.get("after")
    if (len(obj) != 1 or not isinstance(value, dict) or sorted(value) != ["hash", "pos"]
            or type(value["pos"]) is not int or value["pos"] < 1
            or not isinstance(value["hash"], str) or not _HEX64.match(value["hash"]) or value["hash"] == GENESIS):
        # GENESIS is no entry's hash: a checkpoint always follows at least one (archived) entry.
        raise ProvenanceError('line %d is not a checkpoint line {"after":{"pos":P,"hash":H}} (P a position from 1, '
                              'H the 64-digit hex hash of that entry, not all zeros) nor a chain entry' % lineno,
                              reason="syntax", line=lineno)
    return value["pos"], value["hash"]
