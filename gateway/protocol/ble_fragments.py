"""BLE fragmentation of frames (docs/protocol.md §5).

Fragment = msg(u8) | flags (bits 0-6 index, bit 7 last) | up to ATT_MTU - 5 frame bytes.
"""

from __future__ import annotations

from gateway.errors import ProtocolError
from gateway.protocol.frame import MAX_FRAME

MIN_MTU = 23
MAX_FRAGMENTS = 128
LAST_FLAG = 0x80


def fragment_frame(frame: bytes, mtu: int, msg: int) -> list[bytes]:
    """Split ``frame`` into fragments for an ATT MTU.

    Args:
        frame: the raw (not COBS-encoded) frame.
        mtu: negotiated ATT MTU (>= 23); each fragment carries ``mtu - 5`` frame bytes.
        msg: message counter, 0..255.

    Raises:
        ProtocolError: reason ``fragment`` if the MTU is below 23, msg is out of range, the frame
            is empty, or it would need more than 128 fragments.
    """
    if mtu < MIN_MTU:
        raise ProtocolError("ATT MTU %d below the minimum 23" % mtu, reason="fragment")
    if not 0 <= msg <= 255:
        raise ProtocolError("msg counter %d out of 0..255" % msg, reason="fragment")
    if not frame:
        raise ProtocolError("empty frame", reason="fragment")
    size = mtu - 5
    chunks = [frame[i : i + size] for i in range(0, len(frame), size)]
    if len(chunks) > MAX_FRAGMENTS:
        raise ProtocolError("frame needs %d fragments (max 128)" % len(chunks), reason="fragment")
    last = len(chunks) - 1
    return [bytes([msg, i | (LAST_FLAG if i == last else 0)]) + c for i, c in enumerate(chunks)]


class FragmentReassembler:
    """Reassembles fragments of one BLE connection into frames. Does no I/O.

    ``feed`` returns, in order, completed frames (``bytes``) and :class:`ProtocolError` instances
    for partial messages it had to drop (reason ``fragment``): a fragment of a different ``msg``
    arrived, an index was skipped, or a fragment was too short; ``oversize`` past 1024 bytes.
    A fragment with index 0 that interrupts a partial message starts a new message.
    """

    def __init__(self) -> None:
        self._msg: int | None = None
        self._next = 0
        self._buf = bytearray()
        self._skipping = False

    def reset(self) -> None:
        """Drop any partial message (call on disconnect)."""
        self._msg = None
        self._next = 0
        self._buf.clear()

    def feed(self, fragment: bytes) -> list[bytes | ProtocolError]:
        """Consume one notification/write payload and return what it completes or drops."""
        out: list[bytes | ProtocolError] = []
        if len(fragment) < 3:
            if self._msg is not None:
                self.reset()
            out.append(ProtocolError("fragment of %d bytes is too short" % len(fragment), reason="fragment"))
            return out
        msg, flags = fragment[0], fragment[1]
        index, last = flags & 0x7F, bool(flags & LAST_FLAG)
        if self._msg is not None and (msg != self._msg or index != self._next):
            out.append(ProtocolError(
                "dropped partial msg %d at index %d (got msg %d index %d)" % (self._msg, self._next, msg, index),
                reason="fragment"))
            self.reset()
            self._skipping = index != 0
        if self._msg is None:
            if index != 0:
                if not self._skipping:
                    out.append(ProtocolError("fragment index %d of msg %d without its start" % (index, msg),
                                             reason="fragment"))
                # Count a lost message once, not once per remaining fragment.
                self._skipping = not last
                return out
            self._skipping = False
            self._msg = msg
            self._next = 0
        self._buf += fragment[2:]
        self._next += 1
        if len(self._buf) > MAX_FRAME:
            self.reset()
            self._skipping = not last
            out.append(ProtocolError("reassembled message exceeds %d bytes" % MAX_FRAME, reason="oversize"))
            return out
        if last:
            out.append(bytes(self._buf))
            self.reset()
        elif self._next >= MAX_FRAGMENTS:
            self.reset()
            self._skipping = True
            out.append(ProtocolError("message has more than 128 fragments", reason="fragment"))
        return out
