"""A device's replay window and ACK floor as the ingest service keeps them in memory (no I/O).

Part of :class:`gateway.pipeline.ingest.IngestService`: which seqs of a device are committed, pending or
given up on, what its latest ``h`` (docs/protocol.md §2) says it still holds, and the digest prefixes a
re-send is compared with.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

REPLAY_WINDOW = 256
# Committed seqs above a device's ACK floor kept in memory (and reloaded at a restart); more are
# forgotten, highest first, and known again when the device re-sends them.
ABOVE_MAX = 2 * REPLAY_WINDOW
MAX_SEQ = 0xFFFFFFFF  # the last report seq (u32)
# Bytes of a committed frame's digest kept per seq in a device window's ``recent`` (a re-send is compared there).
DIGEST_PREFIX = 8
PREFIX_HEX = 2 * DIGEST_PREFIX


def digest_prefix(digest: str) -> bytes:
    """The first :data:`DIGEST_PREFIX` bytes of a hex frame digest (what ``recent`` keeps per seq)."""
    return bytes.fromhex(digest[:PREFIX_HEX])


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
    # committed seqs near the top -> their frame digest's first DIGEST_PREFIX bytes (None: not known here,
    # asked of the store): a re-send is byte-identical, another frame under the seq a restarted counter
    recent: dict[int, bytes | None] = field(default_factory=dict)
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

