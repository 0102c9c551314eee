"""A device's replay window and ACK floor as the ingest service keeps them in memory (no I/O).

Part of :class:`gateway.pipeline.ingest.IngestService`: which seqs of a device are committed, pending or
given up on, what its latest ``h`` (docs/protocol.md §2) says it still holds, and the digest prefixes a
re-send is compared with.
"""

from __future__ import annotations

import asyncio
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Iterable, Iterator

REPLAY_WINDOW = 256
# Committed seqs above a device's ACK floor kept in memory (and reloaded at a restart); more are
# forgotten, highest first, and known again when the device re-sends them.
ABOVE_MAX = 2 * REPLAY_WINDOW
MAX_SEQ = 0xFFFFFFFF  # the last report seq (u32)
# Bytes of a committed frame's digest kept per seq in a device window's ``recent`` (a re-send is compared there).
DIGEST_PREFIX = 8
PREFIX_HEX = 2 * DIGEST_PREFIX


def digest_prefix(digest: str) -> int:
    """The first :data:`DIGEST_PREFIX` bytes of a hex frame digest as an int (what ``recent`` keeps per seq)."""
    return int(digest[:PREFIX_HEX], 16)


class RecentDigests:
    """A device's committed seqs near the top -> their frame digest's first :data:`DIGEST_PREFIX` bytes
    (:func:`digest_prefix`), or None where the digest is not known here (loaded at start: asked of the store).

    A mapping kept compact, as a fleet has one per device with up to ``2 * REPLAY_WINDOW`` seqs: the seqs in a
    sorted ``array('I')`` and the prefixes in a parallel ``array('Q')``, 12 bytes per seq where a dict of
    ``bytes`` took about 109 (an int and a bytes object per entry). Seqs come in mostly rising, so a new
    one is appended; a lookup is a binary search (it is off the per-frame path: ``feed()`` needs no lookup,
    as every seq kept is at most the device's ``committed_hi``). A prefix 0 is kept as "not known": such a
    seq's digest is asked of the store, which gives the same answer (one extra read, odds 2**-64).
    """

    __slots__ = ("_seqs", "_prefixes")

    def __init__(self, unknown: Iterable[int] = ()) -> None:
        """Start with the seqs ``unknown``, their digests not known here."""
        seqs = sorted(set(unknown))
        self._seqs = array("I", seqs)
        self._prefixes = array("Q", bytes(8 * len(seqs)))

    def _find(self, seq: int) -> int:
        """The index of ``seq`` in ``_seqs``, or -1."""
        seqs = self._seqs
        i = bisect_left(seqs, seq)
        return i if i < len(seqs) and seqs[i] == seq else -1

    def __len__(self) -> int:
        return len(self._seqs)

    def __contains__(self, seq: object) -> bool:
        return isinstance(seq, int) and self._find(seq) >= 0

    def __getitem__(self, seq: int) -> int | None:
        i = self._find(seq)
        if i < 0:
            raise KeyError(seq)
        return self._prefixes[i] or None

    def __setitem__(self, seq: int, prefix: int | None) -> None:
        seqs = self._seqs
        value = prefix or 0
        if not seqs or seq > seqs[-1]:  # the usual case: a new report above the others
            seqs.append(seq)
            self._prefixes.append(value)
            return
        i = bisect_left(seqs, seq)
        if seqs[i] == seq:
            self._prefixes[i] = value
        else:
            seqs.insert(i, seq)
            self._prefixes.insert(i, value)

    def __iter__(self) -> Iterator[int]:
        """The seqs, rising (as a dict's keys; without it ``for s in recent`` fell back to ``__getitem__``)."""
        return iter(self._seqs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecentDigests):
            return self._seqs == other._seqs and self._prefixes == other._prefixes
        if isinstance(other, dict):
            return dict(self.items()) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dict

    def items(self) -> Iterator[tuple[int, int | None]]:
        """(seq, prefix or None) in rising seq order."""
        return ((s, p or None) for s, p in zip(self._seqs, self._prefixes))

    def keep_above(self, floor: int) -> None:
        """Forget the seqs at or below ``floor``."""
        i = bisect_left(self._seqs, floor + 1)
        if i:
            del self._seqs[:i]
            del self._prefixes[:i]

    def __repr__(self) -> str:
        return "RecentDigests(%d seqs)" % len(self._seqs)


@dataclass
class DeviceWindow:
    """Per-device state. ``floor``: every seq <= floor is committed or its gap was given up on;
    ``above``: committed seqs above ``floor``, each with the (monotonic) time it became known, which
    is when the gap below it, if any, became visible. ``info_seq``/``info_runs``: the highest seq
    received with an ``h`` (protocol §2) and that ``h``: the freshest statement of which lower seqs
    the device still holds; ``plain_seq``: the highest seq received without one. ``wait_floor``/
    ``wait_since``/``wait_warned``: since when ACKs wait at ``floor`` for a seq the device may hold,
    and whether that was logged."""

    committed_hi: int = 0
    accepted_hi: int = 0
    floor: int = 0
    # committed seqs near the top (each <= committed_hi) -> their frame digest's first DIGEST_PREFIX bytes
    # (None: not known here, asked of the store): a re-send is byte-identical, another frame under the seq a
    # restarted counter
    recent: RecentDigests = field(default_factory=RecentDigests)
    above: dict[int, float] = field(default_factory=dict)
    pending: dict[int, "asyncio.Future[None]"] = field(default_factory=dict)
    info_seq: int = 0
    info_runs: tuple[int, ...] = ()
    plain_seq: int = 0
    wait_floor: int = -1
    wait_since: float = 0.0
    wait_warned: bool = False

    def note_held(self, seq: int, held: tuple[int, ...] | None) -> None:
        """Record an authentic report's ``h`` (the one framed last, highest seq, is the freshest) or
        that it had none."""
        if held is None:
            self.plain_seq = max(self.plain_seq, seq)
        elif seq > self.info_seq:
            self.info_seq, self.info_runs = seq, held

    @property
    def speaks_held(self) -> bool:
        """The device's latest report states its held seqs (a report without ``h`` framed after it,
        firmware rolled back, puts the device back on the timed hold)."""
        return self.info_seq > self.plain_seq

    def not_held_upto(self, s: int) -> int | None:
        """If the device's freshest ``h`` says it no longer holds ``s``, the last seq of that stretch
        (up to the next held, committed or unstated seq minus one); else None."""
        if s >= self.info_seq:
            return None  # framed after the freshest statement (or none yet)
        runs = self.info_runs
        stop = min(self.info_seq, min(self.above, default=self.info_seq))
        for i in range(0, len(runs), 2):
            if runs[i] <= s <= runs[i + 1]:
                return None  # held: it will be re-sent
            if runs[i] > s:
                stop = min(stop, runs[i])
                break
        return stop - 1

    def jump(self, to: int) -> None:
        """Give up on the seqs from ``floor + 1`` to ``to``: they are acknowledged past."""
        self.floor = to
        for s in [s for s in self.above if s <= to]:
            del self.above[s]


def trim_above(win: DeviceWindow) -> None:
    """Memory stays bounded however long a frame is kept back: beyond :data:`ABOVE_MAX`, forget the
    highest seqs above the floor (no gap is given up: they are committed or refused for good, and
    re-sent they are known again)."""
    if len(win.above) > ABOVE_MAX:
        for s in sorted(win.above)[ABOVE_MAX // 2:]:
            del win.above[s]

