"""Provenance hash chain over stored reports (issue 7 item 6).

Each stored report appends an entry ``(device, seq, gateway, digest, prev)`` whose ``hash`` is
SHA-256 over a canonical JSON encoding of those fields; ``prev`` is the previous entry's hash
(``GENESIS`` for the first). ``digest`` is the SHA-256 of the report's authenticated frame.
An export is JSON Lines, one entry per line, in chain order; :func:`verify_export` recomputes
every link and names the first broken one. A chain cut off at its end still links, so both sides
also give its :class:`ChainSummary` (entry count and final hash) to compare with a saved one.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from gateway.errors import ProvenanceError, StorageError
from gateway.storage.damage import damaged_error, is_corrupt
from gateway.storage.sqlite_uri import read_only_uri

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
    """

    count: int
    head: str


# Characters json.dumps writes unchanged inside a string: device ids, hex digests and usual gateway ids.
_VERBATIM = re.compile(r"[A-Za-z0-9 ._:-]*\Z")


def entry_hash(*, device: str, seq: int, gateway: str, digest: str, prev: str) -> str:
    """Return the hex SHA-256 hash of one chain entry (canonical JSON, sorted keys)."""
    if type(seq) is int and _VERBATIM.match(device + gateway + digest + prev):
        # Same bytes as the json.dumps below, without building a dict and an encoder per entry
        # (it was the largest Python cost of a stored report).
        canon = '{"device":"%s","digest":"%s","gateway":"%s","prev":"%s","seq":%d}' % (device, digest, gateway,
                                                                                       prev, seq)
    else:
        canon = json.dumps(
            {"device": device, "seq": seq, "gateway": gateway, "digest": digest, "prev": prev},
            sort_keys=True, separators=(",", ":"),
        )
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def frame_digest(frame: bytes) -> str:
    """Return the hex SHA-256 of an authenticated frame, as recorded in the chain."""
    return hashlib.sha256(frame).hexdigest()


def last_hash(conn: sqlite3.Connection) -> tuple[int, str]:
    """Return ``(pos, hash)`` of the newest entry, or ``(0, GENESIS)`` for an empty chain."""
    row = conn.execute("SELECT pos, hash FROM chain ORDER BY pos DESC LIMIT 1").fetchone()
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


def iter_chain(conn: sqlite3.Connection) -> Iterator[ChainEntry]:
    """Yield every chain entry in order.

    Raises:
        StorageError: reason ``corrupt``: an entry's stored values are not what the gateway writes (an
            integer seq, text device, gateway and 64-hex hashes; bytes changed on disk). The message
            names the entry by its ``pos`` and the last sound entry before it; no value is quoted.
    """
    last: ChainEntry | None = None
    for row in conn.execute("SELECT pos, device, seq, gateway, digest, prev, hash FROM chain ORDER BY pos"):
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
    conn = sqlite3.connect(read_only_uri(db_path), uri=True)
    count, head = 0, GENESIS
    try:
        for entry in iter_chain(conn):
            out.write(json.dumps({f: getattr(entry, f) for f in _FIELDS}, separators=(",", ":")) + "\n")
            count, head = count + 1, entry.hash
        return ChainSummary(count=count, head=head)
    except sqlite3.Error as exc:
        if is_corrupt(exc):
            raise damaged_error(db_path, exc, "reading the provenance chain after %d entries" % count) from exc
        raise
    finally:
        conn.close()


def verify_export(lines: Iterable[str]) -> int:
    """Verify an export line by line and return the number of entries (see :func:`verify_export_summary`)."""
    return verify_export_summary(lines).count


def verify_export_summary(lines: Iterable[str]) -> ChainSummary:
    """Verify an export line by line and return its entry count and final hash.

    Raises:
        ProvenanceError: at the first broken link, with its 1-based ``line`` and a ``reason``:
            ``syntax`` (not a JSON object), ``missing_field``, ``unknown_field`` (a key that is not
            an entry field: the export writes exactly those), ``pos_mismatch`` (``pos`` is not the
            entry's place in the log: 1 on the first entry, then one more on each), ``prev_mismatch``
            (does not link to the previous entry, i.e. an entry was removed, inserted or reordered),
            ``hash_mismatch`` (the entry's content was altered).
    """
    prev = GENESIS
    count = 0
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested arrays
            raise ProvenanceError("line %d is not JSON: %s" % (lineno, exc), reason="syntax", line=lineno) from exc
        if not isinstance(obj, dict):
            raise ProvenanceError("line %d is not a JSON object" % lineno, reason="syntax", line=lineno)
        unknown = sorted(str(k) for k in obj if k not in _FIELDS)
        if unknown:
            raise ProvenanceError("line %d has %s, not a field of a chain entry" % (lineno, ", ".join(unknown)),
                                  reason="unknown_field", line=lineno)
        missing = [f for f in _FIELDS if f not in obj]
        if missing:
            raise ProvenanceError("line %d lacks %s" % (lineno, ", ".join(missing)), reason="missing_field", line=lineno)
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
        # The first entry links to GENESIS, so it is entry 1 of the chain, and positions run on from it.
        if type(obj["pos"]) is not int or obj["pos"] != count + 1:
            shown = json.dumps(obj["pos"])
            raise ProvenanceError("line %d has pos %s where entry %d of the chain belongs"
                                  % (lineno, shown if len(shown) <= 24 else shown[:21] + "...", count + 1),
                                  reason="pos_mismatch", line=lineno)
        prev = obj["hash"]
        count += 1
    return ChainSummary(count=count, head=prev)
