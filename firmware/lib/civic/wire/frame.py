"""Frame build/parse, protocol v2 (docs/protocol.md §1).

Layout: version(1) type(1) id_len(1) device_id(N) seq(u32 BE) body(msgpack, M>=1)
tag(16) where tag = HMAC-SHA256(key, everything before the tag)[:16].
"""

import struct

from civic.wire import hmac256

VERSION = 2  # v2: reports carry h (protocol §2); a v1-only gateway refuses them unacknowledged
# Parsed: v1 too. Frames framed before an upgrade stay in the outbox (checked at boot) and are
# re-sent, and the gateway answers each frame in its own version.
VERSIONS = (1, 2)
REPORT = 1
ACK = 2
CONFIG = 3
TAG_LEN = 16
MIN_LEN = 25
MAX_LEN = 1024
MAX_ID_LEN = 32
_TYPES = (REPORT, ACK, CONFIG)


class FrameError(ValueError):
    """A frame failed to build or parse.

    Attributes:
        code: one of ``short``, ``oversize``, ``version``, ``type``, ``id``, ``seq``,
            ``body``, ``tag``, ``key`` (stable, for counters; never match on the message).
        detail: human-readable explanation.
    """

    def __init__(self, code, detail):
        super().__init__(code + ": " + detail)
        self.code = code
        self.detail = detail


def check_device_id(device_id):
    """Raise FrameError(``id``) unless ``device_id`` is 1..32 chars of ``[A-Za-z0-9._-]``."""
    if not isinstance(device_id, str) or not 1 <= len(device_id) <= MAX_ID_LEN:
        raise FrameError("id", "device id must be 1..32 characters")
    for ch in device_id:
        if not (("a" <= ch <= "z") or ("A" <= ch <= "Z") or ("0" <= ch <= "9") or ch in "._-"):
            raise FrameError("id", "device id has a character outside [A-Za-z0-9._-]")


def build(ftype, device_id, seq, body, key):
    """Return a complete authenticated frame.

    Args:
        ftype: REPORT, ACK or CONFIG.
        device_id: ASCII device id (1..32 chars of ``[A-Za-z0-9._-]``).
        seq: 0 <= seq < 2**32.
        body: msgpack-encoded body (bytes, at least 1 byte).
        key: 32-byte device key.

    Raises:
        FrameError: any argument out of range, or frame longer than 1024 bytes.
    """
    if ftype not in _TYPES:
        raise FrameError("type", "unknown frame type %r" % (ftype,))
    check_device_id(device_id)
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= 0xFFFFFFFF:
        raise FrameError("seq", "seq must be an int in 0..2**32-1")
    if len(body) < 1:
        raise FrameError("body", "empty body")
    if len(key) != 32:
        raise FrameError("key", "device key must be 32 bytes")
    idb = device_id.encode()
    n = 3 + len(idb) + 4 + len(body) + TAG_LEN
    if n > MAX_LEN:
        raise FrameError("oversize", "frame would be %d bytes (max %d)" % (n, MAX_LEN))
    out = bytearray(struct.pack(">BBB", VERSION, ftype, len(idb)))
    out.extend(idb)
    out.extend(struct.pack(">I", seq))
    out.extend(body)
    out.extend(hmac256.digest(key, out)[:TAG_LEN])
    return bytes(out)


def parse(data, key=None):
    """Parse a frame and, when ``key`` is given, verify its tag (constant time).

    Returns:
        tuple (ftype, device_id, seq, body) with ``body`` the raw msgpack bytes.

    Raises:
        FrameError: ``short``/``oversize`` length, ``version``, ``type``, ``id`` (bad length
            or characters), ``body`` (empty), ``tag`` (does not verify).
    """
    n = len(data)
    if n < MIN_LEN:
        raise FrameError("short", "frame is %d bytes (min %d)" % (n, MIN_LEN))
    if n > MAX_LEN:
        raise FrameError("oversize", "frame is %d bytes (max %d)" % (n, MAX_LEN))
    if data[0] not in VERSIONS:
        raise FrameError("version", "unknown version %d" % data[0])
    ftype = data[1]
    if ftype not in _TYPES:
        raise FrameError("type", "unknown frame type %d" % ftype)
    id_len = data[2]
    if not 1 <= id_len <= MAX_ID_LEN:
        raise FrameError("id", "id_len %d out of 1..32" % id_len)
    body_start = 3 + id_len + 4
    if body_start + 1 + TAG_LEN > n:
        raise FrameError("body", "no room for a body")
    try:
        device_id = str(bytes(data[3:3 + id_len]), "ascii")
    except UnicodeError:
        raise FrameError("id", "device id is not ASCII")
    check_device_id(device_id)
    seq = struct.unpack(">I", bytes(data[3 + id_len:body_start]))[0]
    if key is not None:
        want = hmac256.digest(key, data[:n - TAG_LEN])[:TAG_LEN]
        if not hmac256.compare(want, data[n - TAG_LEN:]):
            raise FrameError("tag", "tag does not verify")
    return ftype, device_id, seq, bytes(data[body_start:n - TAG_LEN])
