"""Serial link codec: COBS-encoded frames delimited by 0x00 (docs/protocol.md §5)."""

from __future__ import annotations

from gateway.errors import ProtocolError
from gateway.protocol.cobs import cobs_decode, cobs_encode
from gateway.protocol.frame import MAX_FRAME

# Largest canonical COBS encoding of a MAX_FRAME frame (docs/protocol.md §5).
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 1


def encode_serial(frame: bytes) -> bytes:
    """Return ``frame`` COBS-encoded and followed by the 0x00 delimiter."""
    return cobs_encode(frame) + b"\x00"


class SerialDeframer:
    """Splits a byte stream into frames. Does no I/O.

    ``feed`` returns, in stream order, decoded frames (``bytes``) and :class:`ProtocolError`
    instances for chunks that were dropped (``cobs`` or ``oversize``), so the caller can count them.
    After garbage or a cut frame it resynchronises at the next 0x00.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> list[bytes | ProtocolError]:
        """Consume ``data`` and return the frames/errors completed by it."""
        out: list[bytes | ProtocolError] = []
        start = 0
        while True:
            idx = data.find(b"\x00", start)
            if 0 < idx - start <= MAX_ENCODED and not self._buf and not self._overflow:
                # A whole chunk inside ``data`` (the usual case): decoded from its slice, without the
                # copies through the buffer. Anything else (a partial chunk, a dropped one) below.
                try:
                    out.append(cobs_decode(data[start:idx]))
                except ProtocolError as exc:
                    out.append(exc)
                start = idx + 1
                continue
            piece = data[start:] if idx < 0 else data[start:idx]
            if not self._overflow:
                self._buf += piece
                if len(self._buf) > MAX_ENCODED:
                    # Never buffer without bound: drop until the next delimiter.
                    self._overflow = True
                    self._buf.clear()
            if idx < 0:
                break
            if self._overflow:
                out.append(ProtocolError("serial chunk longer than %d bytes" % MAX_ENCODED, reason="oversize"))
                self._overflow = False
            elif self._buf:
                try:
                    out.append(cobs_decode(bytes(self._buf)))
                except ProtocolError as exc:
                    out.append(exc)
            self._buf.clear()
            start = idx + 1
        return out

    def reset(self) -> None:
        """Forget any partial chunk (e.g. after the port was reopened)."""
        self._buf.clear()
        self._overflow = False
