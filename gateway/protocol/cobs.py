"""Consistent Overhead Byte Stuffing (COBS), as used on the serial link (docs/protocol.md §5)."""

from __future__ import annotations

from gateway.errors import ProtocolError


def cobs_encode(data: bytes) -> bytes:
    """Encode ``data`` as canonical COBS (docs/protocol.md §5), without the 0x00 delimiter.

    A run of 254 non-zero bytes is coded ``0xFF`` + the bytes; when the data ends right after such a
    run no empty ``0x01`` block follows.
    """
    # Block by block from the zero-free runs (split in C), not byte by byte: an ACK is encoded for every
    # report a busy serial link delivers.
    out = bytearray()
    runs = bytes(data).split(b"\x00")
    last = len(runs) - 1
    for i, run in enumerate(runs):
        # 254 bytes are a whole 0xFF block; the zero after a run (all runs but the last) ends a block
        # of its own, empty when the run filled its last 0xFF block, so only the data's last run ends
        # without one.
        start, n = 0, len(run)
        while n - start > 254 or (n - start == 254 and i != last):
            out.append(255)
            out += run[start:start + 254]
            start += 254
        rest = n - start
        out.append(255 if rest == 254 else rest + 1)
        out += run[start:]
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS chunk (without its 0x00 delimiter).

    Raises:
        ProtocolError: reason ``cobs`` on an empty chunk, a zero byte, or a code running past the end.
    """
    if not data:
        raise ProtocolError("empty COBS chunk", reason="cobs")
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ProtocolError("zero byte inside COBS chunk at offset %d" % i, reason="cobs")
        end = i + code
        if end > n:
            raise ProtocolError("COBS code at offset %d runs past the chunk end" % i, reason="cobs")
        block = data[i + 1 : end]
        if 0 in block:
            raise ProtocolError("zero byte inside COBS chunk", reason="cobs")
        out += block
        i = end
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)
