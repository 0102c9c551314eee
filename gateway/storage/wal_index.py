"""A ``-shm`` left without its ``-wal``: did that ``-wal`` hold commits the main file lacks?

SQLite keeps the WAL's index in ``<db>-shm`` (file format docs, "WAL-index format"): two copies of the
48-byte ``WalIndexHdr`` (``mxFrame``, the last valid frame of the WAL, a u32 at offset 16; ``isInit`` a u8
at 12; a checksum over its first 40 bytes at 40), then ``WalCkptInfo``, whose first u32 ``nBackfill`` (at
offset 96) says how many of those frames a checkpoint copied into the database file. Native byte order.

A clean stop removes the ``-wal`` and ``-shm`` both; a gateway killed (or a power cut) leaves both. A
``-shm`` alone, saying ``mxFrame > nBackfill``, means a ``-wal`` holding committed (acknowledged) reports
was deleted or moved: SQLite would open the store without them, recreate an empty ``-wal`` and rebuild
the index, losing them silently. Read-only (a plain read of the ``-shm``; SQLite has nothing open then).
"""

from __future__ import annotations

import os
import shlex
import struct
import time
from pathlib import Path
from typing import NamedTuple

from gateway.errors import StorageError

WAL_INDEX_VERSION = 3007000  # WalIndexHdr.iVersion
_HDR = 48
_NEEDED = 2 * _HDR + 4  # both header copies and nBackfill


class WalIndex(NamedTuple):
    """What a ``-shm`` says of its WAL: ``frames`` (``mxFrame``), ``backfilled`` (``nBackfill``)."""

    frames: int
    backfilled: int

    @property
    def pending(self) -> int:
        """Frames of commits not copied into the database file (held by the ``-wal`` only)."""
        return max(0, self.frames - self.backfilled)


def _checksum(data: bytes) -> tuple[int, int]:
    """SQLite's WAL checksum (native byte order) over ``data`` (a multiple of 8 bytes)."""
    s1 = s2 = 0
    for x0, x1 in struct.iter_unpack("=II", data):
        s1 = (s1 + x0 + s2) & 0xFFFFFFFF
        s2 = (s2 + x1 + s1) & 0xFFFFFFFF
    return s1, s2


def _header(raw: bytes) -> int | None:
    """``mxFrame`` of one 48-byte ``WalIndexHdr`` copy, or None when it is not a valid, initialised one."""
    version, _unused, _change, is_init, _big, _page, mx_frame = struct.unpack_from("=IIIBBHI", raw)
    if version != WAL_INDEX_VERSION or not is_init:
        return None
    if _checksum(raw[:40]) != struct.unpack_from("=II", raw, 40):
        return None
    return int(mx_frame)


def read_wal_index(shm: Path) -> WalIndex | None:
    """What ``shm`` says of its WAL, or None when that cannot be told (absent, short, never initialised,
    torn: both header copies invalid, or valid but different and neither can be trusted over the other).

    Of two valid copies that differ (a writer cut off between the two writes) the larger ``mxFrame`` is taken:
    that WAL held at least that many frames.
    """
    try:
        with open(shm, "rb") as f:
            raw = f.read(_NEEDED)
    except OSError:
        return None
    if len(raw) < _NEEDED:
        return None
    frames = [h for h in (_header(raw[:_HDR]), _header(raw[_HDR:2 * _HDR])) if h is not None]
    if not frames:
        return None
    (backfilled,) = struct.unpack_from("=I", raw, 2 * _HDR)
    return WalIndex(max(frames), int(backfilled))


class WalState(NamedTuple):
    """What a running store's ``-shm`` says of its log (:func:`wal_state`), to tell a checkpoint another
    connection ran through SQLite's locks from another program writing the main file.

    Attributes:
        generation: the first salt of the log (``aSalt[0]``, big-endian), one more at each start over of the
            log (SQLite's ``walRestartHdr``: after a whole checkpoint, by the next writer or a
            ``wal_checkpoint(RESTART|TRUNCATE)``).
        frames: ``mxFrame``, the last valid frame of the log.
        backfilled: ``nBackfill``, the frames of this log a checkpoint copied into the main file.
        pages: ``nPage``, the database's size in pages at the last commit.
        commits: ``iChange``, one more at every commit of any connection (SQLite's ``walIndexWriteHdr`` from
            ``sqlite3WalFrames``) and unchanged when a checkpoint starts the log over (``walRestartHdr``): a
            ``wal_checkpoint(TRUNCATE)`` moves the other connections' ``PRAGMA data_version`` as a commit would,
            but not this.
    """

    generation: int
    frames: int
    backfilled: int
    pages: int
    commits: int


def wal_state(raw: bytes) -> WalState | None:
    """The :class:`WalState` of the first 100 bytes of a ``-shm`` (read through SQLite's own descriptor of
    it), or None when they cannot be trusted (short, not initialised, torn: the two header copies differ)."""
    if len(raw) < _NEEDED or raw[:_HDR] != raw[_HDR:2 * _HDR] or _header(raw[:_HDR]) is None:
        return None
    _version, _unused, change, _init, _big, _page, mx_frame, n_page = struct.unpack_from("=IIIBBHII", raw)
    (generation,) = struct.unpack_from(">I", raw, 32)
    (backfilled,) = struct.unpack_from("=I", raw, 2 * _HDR)
    return WalState(int(generation), int(mx_frame), int(backfilled), int(n_page), int(change))


class WalLog(NamedTuple):
    """A running store's log as its ``-shm`` says it now (:func:`read_wal_log`): its :class:`WalState` and the
    database's page size (``szPage``), hence how many bytes of the ``-wal`` the log fills."""

    state: WalState
    page_size: int

    @property
    def log_bytes(self) -> int:
        """Bytes of the ``-wal`` the current log fills (its 32-byte header and ``mxFrame`` frames); the file may
        be longer (SQLite writes a log started over from the file's beginning and cuts it back only to
        ``journal_size_limit``)."""
        return 32 + self.state.frames * (self.page_size + 24) if self.state.frames else 0


def read_wal_log(shm: Path) -> WalLog | None:
    """The :class:`WalLog` a running store's ``-shm`` says now, through a plain read of its first 100 bytes
    (another process's look: no SQLite lock is taken, nothing written), or None when it cannot be told (no
    ``-shm``, unreadable, or torn: a writer was between the two header copies; look again)."""
    try:
        with open(shm, "rb") as f:
            raw = f.read(_NEEDED)
    except OSError:
        return None
    state = wal_state(raw)
    if state is None:
        return None
    (page,) = struct.unpack_from("=H", raw, 14)
    return WalLog(state, 65536 if page == 1 else int(page))


def checkpointed_since(was: WalState, now: WalState) -> bool:
    """Whether a checkpoint copied frames of the log into the main file between ``was`` and ``now``.

    In one log that is ``nBackfill`` growing. A log started over since (its generation moved on) was first
    checkpointed whole, except once when ``was`` already was whole and not empty: the writer starts the log
    over at its first commit after a whole checkpoint (SQLite's ``walRestartLog``, only when ``nBackfill`` is
    above 0), which writes only the ``-wal``; an empty log (as a TRUNCATE leaves it) it writes on as it is.
    Any frame backfilled in the new log is a checkpoint too."""
    if now.generation == was.generation:
        return now.backfilled > was.backfilled
    restarts = (now.generation - was.generation) & 0xFFFFFFFF
    own = 1 if 0 < was.frames <= was.backfilled else 0
    return now.backfilled > 0 or restarts > own


def checkpoint_could_leave(was_size: int, size: int, header: bytes, now: WalState, page_size: int) -> bool:
    """Whether a main file of ``size`` bytes beginning with ``header`` is what a checkpoint of the log
    ``now`` could leave of one of ``was_size`` bytes: whole pages of the store's page size, a database
    header, at most the database's size (or the file's before, a checkpoint cut short truncating nothing),
    exactly the database's after a whole checkpoint (SQLite truncates the file to it)."""
    if was_size < 0 or size <= 0 or size % page_size or len(header) < 100:
        return False
    (stored,) = struct.unpack_from(">H", header, 16)
    if header[:16] != b"SQLite format 3\x00" or (65536 if stored == 1 else stored) != page_size:
        return False
    if now.pages == 0:
        return False
    db = now.pages * page_size
    if now.backfilled >= now.frames:
        return size == db
    return size <= max(was_size, db)


def check_wal_present(path: Path, real: Path) -> WalIndex | None:
    """Refuse a store whose ``-shm`` says its ``-wal`` held commits when that ``-wal`` is gone.

    ``path`` is the configured name (for messages), ``real`` the file itself (symlinks resolved: the
    ``-wal`` and ``-shm`` are next to it). Call it with no gateway holding the store (its ``-wal`` is there
    while it runs). Returns the index of a ``-shm`` left alone that holds nothing pending (the caller may
    say so), None when there is nothing to say (no ``-shm``, a ``-wal`` next to it, an index that cannot be
    read).

    Raises:
        StorageError: reason ``wal_missing``, saying what is lost and the ``mv`` commands that put the
            ``-wal`` back or accept the loss; reason ``overwritten_aside`` first (:func:`check_no_overwritten`).
    """
    check_no_overwritten(path, real)
    wal = real.with_name(real.name + "-wal")
    shm = real.with_name(real.name + "-shm")
    if wal.exists() or wal.is_symlink() or not shm.is_file():
        return None
    index = read_wal_index(shm)
    if index is None or not index.pending:
        return index
    q = shlex.quote
    raise StorageError(
        "report store %s: its write-ahead log %s is missing, but %s (its index, left by a gateway that did not "
        "stop cleanly) says it held %d frame(s) of committed, acknowledged reports that are not in %s; started "
        "without it, the store would go back to its last checkpoint and those reports would be lost for good "
        "(the devices no longer hold them). With the gateway stopped: if the -wal was moved or copied "
        "elsewhere, put it back (mv -n /where/it/is/%s %s) and start again; only if it is lost (no copy "
        "anywhere), accept the loss by moving the index aside (mv -n %s %s.orphaned) and start again, or "
        "restore the last backup (docs/gateway.md, Restoring a backup). A -shm left over from the file a "
        "restored backup replaced is moved aside the same way"
        % (path, q(str(wal)), q(str(shm)), index.pending, q(str(real)), q(wal.name), q(str(wal)), q(str(shm)),
           q(str(shm))),
        reason="wal_missing")


def overwritten_aside(real: Path) -> list[Path]:
    """The ``-wal``/``-shm`` a gateway set aside next to the store ``real`` when it found the file overwritten
    in place (``<db>-wal.overwritten``, ``-shm.overwritten``, ``...overwritten-N``; gateway.storage.store), in
    name order; also one of a pair whose stop was cut off between the two renames."""
    try:
        names = os.listdir(real.parent)
    except OSError:
        return []
    heads = (real.name + "-wal.overwritten", real.name + "-shm.overwritten")
    return [real.parent / n for n in sorted(names) if n.startswith(heads)]


def check_no_overwritten(path: Path, real: Path) -> None:
    """Refuse to start while a ``-wal``/``-shm`` set aside by :meth:`ReportStore.close` of a store found
    overwritten in place is next to it: whether that store was really overwritten (a copy: keep them out of
    the way) or only touched (the file is the gateway's own and that ``-wal`` holds its last acknowledged
    reports: put them back) cannot be told now; started either way, the wrong choice loses reports for good.

    Raises:
        StorageError: reason ``overwritten_aside``, with the ``mv`` commands of both cases.
    """
    found = overwritten_aside(real)
    if not found:
        return
    q = shlex.quote
    # A name of its own each time: a second incident's mv -n into the first one's directory would skip what
    # is already there, silently (the files left beside the store, the start refused again).
    base = real.name + ".set-aside-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside, n = real.with_name(base), 2
    while os.path.lexists(aside):
        aside, n = real.with_name("%s-%d" % (base, n)), n + 1
    back = []
    for part in ("-wal", "-shm"):
        mine = [f for f in found if f.name.startswith(real.name + part + ".overwritten")]
        if mine:  # the newest of a kind (a name taken gets -2, -3, ...): the last stop's
            newest = max(mine, key=lambda f: (len(f.name), f.name))
            back.append("mv -n %s %s" % (q(str(newest)), q(str(real.with_name(real.name + part)))))
    raise StorageError(
        "report store %s: %s %s beside it (%s): a gateway found the file changed in place while it ran and, at its "
        "stop, set its -wal and -shm aside instead of letting SQLite replay them onto the file. Decide before "
        "starting, by the ERROR it logged when it found it (journalctl: 'report store file ... in place', which "
        "says what changed), with the gateway stopped: if the file's size or database header changed (a backup "
        "was copied over it: what it holds now is the store), move them out of the way: mkdir -p -m 0700 %s && "
        "mv -n %s %s/ and start; if only its modification time changed (a touch: the file is the gateway's own "
        "and that -wal holds its last acknowledged reports), and only if you know nothing was copied over it (a "
        "copy of the same size looks the same), put them back: %s and start "
        "(docs/gateway.md, Overwritten in place)"
        % (path, ", ".join(q(f.name) for f in found), "are" if len(found) > 1 else "is",
           ", ".join(q(str(f)) for f in found), q(str(aside)), " ".join(q(str(f)) for f in found), q(str(aside)),
           " && ".join(back)),
        reason="overwritten_aside")
