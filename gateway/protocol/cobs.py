"""Consistent Overhead Byte Stuffing (COBS), as used on the serial link (docs/protocol.md §5)."""

from __future__ import annotations

from gateway.errors import ProtocolError


def cobs_encode(data: bytes) -> bytes:
    """Encode ``data`` as canonical COBS (docs/protocol.md §5), without the 0x00 delimiter.

    A run of 254 non-zero bytes is coded ``0xFF`` + the bytes; when the data ends right after such a
    run no empty ``0x01`` block follows.
    """
    out = bytearray()
    block = bytearray()
    last = len(data) - 1
    for i, byte in enumerate(data):
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254 and i != last:
                out.append(255)
                out += block
                block.clear()
    out.append(255 if len(block) == 254 else len(block) + 1)
    out += block
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
