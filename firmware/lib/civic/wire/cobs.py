"""Consistent Overhead Byte Stuffing (COBS) for the serial link (docs/protocol.md §5).

An encoded frame contains no 0x00 byte, so 0x00 delimits frames on the UART.
"""


def encode(data):
    """Return the COBS encoding of ``data`` (without the trailing 0x00 delimiter)."""
    out = bytearray()
    code_pos = 0
    out.append(0)
    code = 1
    after_full = False  # last block was opened only because the previous one hit 254 bytes
    for b in data:
        after_full = False
        if b == 0:
            out[code_pos] = code
            code_pos = len(out)
            out.append(0)
            code = 1
        else:
            out.append(b)
            code += 1
            if code == 0xFF:
                out[code_pos] = code
                code_pos = len(out)
                out.append(0)
                code = 1
                after_full = True
    if after_full:
        # minimal form: no empty block after a full one at the very end
        return bytes(memoryview(out)[:code_pos])
    out[code_pos] = code
    return bytes(out)


def decode(data):
    """Decode one COBS chunk (delimiter already stripped).

    Raises:
        ValueError: empty chunk, a 0x00 byte inside the chunk, or a code byte pointing
            past the end (cut or corrupted frame).
    """
    n = len(data)
    if n == 0:
        raise ValueError("cobs: empty chunk")
    out = bytearray()
    i = 0
    while i < n:
        code = data[i]
        if code == 0:
            raise ValueError("cobs: zero byte at %d" % i)
        end = i + code
        if end > n:
            raise ValueError("cobs: code at %d runs past end" % i)
        seg = bytes(data[i + 1:end])  # bytes: MicroPython has no `int in bytearray`
        if 0 in seg:
            raise ValueError("cobs: zero byte in block at %d" % i)
        out.extend(seg)
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)
