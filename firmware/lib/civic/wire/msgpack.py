"""Small msgpack encoder/decoder for the MicroPython subset (no floats, no ext types).

``encode`` covers None, bool, ints (-2**63 .. 2**64-1), bytes/bytearray/memoryview (bin),
str (UTF-8), list/tuple (array) and dict (map), nested. It always picks the smallest
encoding, so its output is byte-identical to CPython ``msgpack.packb(v, use_bin_type=True)``.
``decode`` parses what a device receives (ACK and CONFIG bodies) and raises ValueError on
malformed, truncated or unsupported input.
"""

import struct

_MAX_DEPTH = 16


def encode(obj):
    """Return the msgpack encoding of ``obj`` as bytes.

    Raises:
        TypeError: unsupported type (e.g. float).
        ValueError: int outside 64-bit range, or nesting deeper than 16 levels.
    """
    out = bytearray()
    _enc(obj, out, 0)
    return bytes(out)


def _enc_len(out, n, fix_base, fix_max, c8, c16, c32):
    if n <= fix_max:
        out.append(fix_base | n)
    elif c8 and n < 0x100:
        out.append(c8)
        out.append(n)
    elif n < 0x10000:
        out.append(c16)
        out.extend(struct.pack(">H", n))
    elif n < 0x100000000:
        out.append(c32)
        out.extend(struct.pack(">I", n))
    else:
        raise ValueError("msgpack: object too long")


def _enc_int(v, out):
    if v >= 0:
        if v < 0x80:
            out.append(v)
        elif v < 0x100:
            out.append(0xCC)
            out.append(v)
        elif v < 0x10000:
            out.extend(struct.pack(">BH", 0xCD, v))
        elif v < 0x100000000:
            out.extend(struct.pack(">BI", 0xCE, v))
        elif v < 0x10000000000000000:
            out.append(0xCF)
            out.extend(struct.pack(">Q", v))
        else:
            raise ValueError("msgpack: int too large")
    else:
        if v >= -32:
            out.append(v & 0xFF)
        elif v >= -0x80:
            out.extend(struct.pack(">Bb", 0xD0, v))
        elif v >= -0x8000:
            out.extend(struct.pack(">Bh", 0xD1, v))
        elif v >= -0x80000000:
            out.extend(struct.pack(">Bi", 0xD2, v))
        elif v >= -0x8000000000000000:
            out.append(0xD3)
            out.extend(struct.pack(">q", v))
        else:
            raise ValueError("msgpack: int too small")


def _enc(obj, out, depth):
    if depth > _MAX_DEPTH:
        raise ValueError("msgpack: nesting too deep")
    if obj is None:
        out.append(0xC0)
    elif obj is True:
        out.append(0xC3)
    elif obj is False:
        out.append(0xC2)
    elif isinstance(obj, int):
        _enc_int(obj, out)
    elif isinstance(obj, str):
        b = obj.encode("utf-8")
        _enc_len(out, len(b), 0xA0, 31, 0xD9, 0xDA, 0xDB)
        out.extend(b)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _enc_len(out, len(obj), 0, -1, 0xC4, 0xC5, 0xC6)
        out.extend(obj)
    elif isinstance(obj, (list, tuple)):
        _enc_len(out, len(obj), 0x90, 15, 0, 0xDC, 0xDD)
        for item in obj:
            _enc(item, out, depth + 1)
    elif isinstance(obj, dict):
        _enc_len(out, len(obj), 0x80, 15, 0, 0xDE, 0xDF)
        for key in obj:
            _enc(key, out, depth + 1)
            _enc(obj[key], out, depth + 1)
    else:
        raise TypeError("msgpack: cannot encode " + type(obj).__name__)


def decode(data):
    """Decode exactly one msgpack object filling ``data`` entirely.

    Raises:
        ValueError: truncated input, trailing bytes, unsupported type (float, ext,
            reserved 0xC1), invalid UTF-8, unhashable map key, or nesting deeper than 16.
    """
    mv = memoryview(data)
    obj, pos = _dec(mv, 0, 0)
    if pos != len(mv):
        raise ValueError("msgpack: %d trailing bytes" % (len(mv) - pos))
    return obj


def _take(mv, pos, n):
    end = pos + n
    if end > len(mv):
        raise ValueError("msgpack: truncated at %d" % pos)
    return mv[pos:end], end


def _unpack(fmt, mv, pos, n):
    raw, pos = _take(mv, pos, n)
    return struct.unpack(fmt, raw)[0], pos


def _dec_str(mv, pos, n):
    raw, pos = _take(mv, pos, n)
    try:
        return str(bytes(raw), "utf-8"), pos
    except UnicodeError:
        raise ValueError("msgpack: invalid UTF-8 in str")


def _dec_array(mv, pos, n, depth):
    items = []
    for _ in range(n):
        item, pos = _dec(mv, pos, depth + 1)
        items.append(item)
    return items, pos


def _dec_map(mv, pos, n, depth):
    result = {}
    for _ in range(n):
        key, pos = _dec(mv, pos, depth + 1)
        if isinstance(key, (list, dict)):
            raise ValueError("msgpack: unhashable map key")
        val, pos = _dec(mv, pos, depth + 1)
        result[key] = val
    return result, pos


def _dec(mv, pos, depth):
    if depth > _MAX_DEPTH:
        raise ValueError("msgpack: nesting too deep")
    if pos >= len(mv):
        raise ValueError("msgpack: truncated at %d" % pos)
    b = mv[pos]
    pos += 1
    if b < 0x80:
        return b, pos
    if b >= 0xE0:
        return b - 0x100, pos
    if b < 0x90:
        return _dec_map(mv, pos, b & 0x0F, depth)
    if b < 0xA0:
        return _dec_array(mv, pos, b & 0x0F, depth)
    if b < 0xC0:
        return _dec_str(mv, pos, b & 0x1F)
    if b == 0xC0:
        return None, pos
    if b == 0xC2:
        return False, pos
    if b == 0xC3:
        return True, pos
    if 0xC4 <= b <= 0xC6:
        n, pos = _unpack((">B", ">H", ">I")[b - 0xC4], mv, pos, (1, 2, 4)[b - 0xC4])
        raw, pos = _take(mv, pos, n)
        return bytes(raw), pos
    if 0xCC <= b <= 0xD3:
        i = b - 0xCC
        return _unpack((">B", ">H", ">I", ">Q", ">b", ">h", ">i", ">q")[i], mv, pos, (1, 2, 4, 8)[i & 3])
    if 0xD9 <= b <= 0xDB:
        n, pos = _unpack((">B", ">H", ">I")[b - 0xD9], mv, pos, (1, 2, 4)[b - 0xD9])
        return _dec_str(mv, pos, n)
    if b == 0xDC or b == 0xDD:
        n, pos = _unpack(">H" if b == 0xDC else ">I", mv, pos, 2 if b == 0xDC else 4)
        return _dec_array(mv, pos, n, depth)
    if b == 0xDE or b == 0xDF:
        n, pos = _unpack(">H" if b == 0xDE else ">I", mv, pos, 2 if b == 0xDE else 4)
        return _dec_map(mv, pos, n, depth)
    raise ValueError("msgpack: unsupported type byte 0x%02x" % b)
