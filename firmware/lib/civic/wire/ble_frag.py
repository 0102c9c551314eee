"""BLE fragmentation (docs/protocol.md §5): 2-byte header per notification / write.

Header: byte 0 = message counter (u8, wraps), byte 1 = fragment index (bits 0-6) with
bit 7 set on the last fragment. Payload per fragment = ATT_MTU - 3 - 2 bytes.
"""

from civic.wire.frame import MAX_LEN

MIN_MTU = 23
MAX_FRAGMENTS = 128
LAST = 0x80


def payload_size(mtu):
    """Frame bytes per fragment for ``mtu``; raise ValueError if ``mtu`` < 23."""
    if mtu < MIN_MTU:
        raise ValueError("ble_frag: ATT MTU %d below the minimum 23" % mtu)
    return mtu - 5


def fragment(frame, mtu, msg):
    """Split ``frame`` into a list of fragments for ``mtu`` with message counter ``msg``.

    Raises:
        ValueError: mtu < 23, empty frame, or more than 128 fragments needed.
    """
    size = payload_size(mtu)
    n = len(frame)
    if n == 0:
        raise ValueError("ble_frag: empty frame")
    count = (n + size - 1) // size
    if count > MAX_FRAGMENTS:
        raise ValueError("ble_frag: frame needs %d fragments (max 128)" % count)
    msg &= 0xFF
    out = []
    for i in range(count):
        hdr = bytes((msg, i | (LAST if i == count - 1 else 0)))
        out.append(hdr + bytes(frame[i * size:(i + 1) * size]))
    return out


class Reassembler:
    """Rebuilds frames from fragments; parser only, no I/O.

    Drop rules (each drop increments ``dropped``): a fragment of a different ``msg``
    while a message is partial; a skipped or repeated index; a continuation fragment with
    no message started; a fragment shorter than 3 bytes; a message over 1024 bytes.
    ``reset()`` on disconnect drops a partial message (counted too).
    """

    def __init__(self, max_len=MAX_LEN):
        self.max_len = max_len
        self.dropped = 0
        self._buf = bytearray()
        self._msg = -1
        self._next = 0

    def reset(self):
        """Forget a partial message (call when the connection drops)."""
        if self._msg >= 0:
            self.dropped += 1
        self._clear()

    def _clear(self):
        self._buf = bytearray()
        self._msg = -1
        self._next = 0

    def feed(self, fragment):
        """Add one fragment; return the complete frame (bytes) or None."""
        if len(fragment) < 3:
            self.dropped += 1
            return None
        msg = fragment[0]
        idx = fragment[1] & 0x7F
        last = fragment[1] & LAST
        if self._msg >= 0 and (msg != self._msg or idx != self._next):
            self.dropped += 1  # partial message abandoned
            self._clear()
        if self._msg < 0:
            if idx != 0:
                self.dropped += 1
                return None
            self._msg = msg
        self._buf.extend(fragment[2:])
        self._next = idx + 1
        if len(self._buf) > self.max_len:
            self.dropped += 1
            self._clear()
            return None
        if last:
            out = bytes(self._buf)
            self._clear()
            return out
        if self._next >= MAX_FRAGMENTS:
            self.dropped += 1
            self._clear()
        return None
