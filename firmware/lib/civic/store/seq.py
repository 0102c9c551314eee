"""Report sequence counter that never repeats a number, across reboots and power loss.

The flash file holds the highest *reserved* seq. Numbers are handed out from RAM; when
they run past the reservation, a new block is reserved (written atomically) *before* the
number is used. After a reboot counting resumes above the reservation, so a crash may
skip up to ``block`` numbers but never reuses one (docs/protocol.md §1).

The reservation is written twice, to ``path`` and then to ``path + ".bak"``, both before any
number of the block is used: every seq ever used is at most either copy, so one damaged copy is
recovered from the other (the larger of the readable ones). Only when no copy is readable does
the counter refuse to start: a guessed seq could repeat one the gateway already stored.

With both copies absent (a fresh device, or files lost) other flash may still hold seqs used
before: the owner passes them to :meth:`SeqCounter.at_least` (the runtime: the outbox's highest),
so counting resumes above them instead of at 1 (a reused seq the gateway may drop as a replay).
"""

import struct

from civic.store import atomic

MAX_SEQ = 0xFFFFFFFF
BACKUP_SUFFIX = ".bak"


class SeqExhausted(ValueError):
    """The u32 seq space is used up; the device needs re-provisioning with a new id."""


class SeqCounter:
    """Persisted monotonically increasing counter starting at 1.

    Args:
        path: flash file (e.g. ``/seq.bin``).
        block: numbers reserved per flash write (fewer writes, bigger gap after a crash).
    """

    def __init__(self, path, block=32):
        if block < 1:
            raise ValueError("seq: block must be >= 1")
        self.path = path
        self.block = block
        self.repaired = None  # the copy found damaged and rewritten at this boot, if any
        found = []
        damaged = None
        for copy in (path, path + BACKUP_SUFFIX):
            try:
                raw = atomic.read(copy)
            except ValueError:  # CorruptFile, or a payload of the wrong size
                damaged = copy
                continue
            if raw is not None:
                if len(raw) != 4:
                    damaged = copy
                    continue
                found.append(struct.unpack(">I", raw)[0])
        if damaged is not None and not found:
            raise atomic.CorruptFile(damaged)  # no readable copy: never guess a seq
        self._reserved = max(found) if found else 0
        if damaged is not None:
            self._write(self._reserved)
            self.repaired = damaged
        self._last = self._reserved  # first next() returns reserved + 1

    def at_least(self, seq):
        """Make every seq handed out from now on greater than ``seq`` (one used before, e.g. found
        in the outbox); a lower ``seq`` changes nothing. A floor above the reservation is written
        to flash at once (it is raised only when the seq files were lost): a reboot before the next
        :meth:`next` must not start below it again.

        Raises:
            ValueError: ``seq`` is not an int in 0..MAX_SEQ.
            OSError: the floor could not be written (nothing changed).
        """
        if not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
            raise ValueError("seq: floor %r is not a u32" % (seq,))
        if seq > self._last:
            if seq > self._reserved:
                self._write(seq)  # next() reserves a new block above it before using one
                self._reserved = seq
            self._last = seq

    def _write(self, reserved):
        payload = struct.pack(">I", reserved)
        atomic.write(self.path, payload)
        atomic.write(self.path + BACKUP_SUFFIX, payload)

    @property
    def last(self):
        """The highest seq handed out since boot, or the reservation from before boot."""
        return self._last

    def next(self):
        """Return the next seq, reserving a new block in flash first when needed."""
        n = self._last + 1
        if n > MAX_SEQ:
            raise SeqExhausted("seq: u32 space exhausted")
        if n > self._reserved:
            reserved = min(MAX_SEQ, n + self.block - 1)
            self._write(reserved)
            self._reserved = reserved
        self._last = n
        return n
