"""Report sequence counter that never repeats a number, across reboots and power loss.

The flash file holds the highest *reserved* seq. Numbers are handed out from RAM; when
they run past the reservation, a new block is reserved (written atomically) *before* the
number is used. After a reboot counting resumes above the reservation, so a crash may
skip up to ``block`` numbers but never reuses one (docs/protocol.md §1).
"""

import struct

from civic.store import atomic

MAX_SEQ = 0xFFFFFFFF


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
        raw = atomic.read(path)  # a corrupt file raises: never guess a seq
        self._reserved = struct.unpack(">I", raw)[0] if raw is not None else 0
        self._last = self._reserved  # first next() returns reserved + 1

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
            atomic.write(self.path, struct.pack(">I", reserved))
            self._reserved = reserved
        self._last = n
        return n
