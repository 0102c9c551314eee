"""Frame build/parse for wire protocol v2, and v1 from older firmware (docs/protocol.md §1).

Layout: version(1) type(1) id_len(1) device_id(N) seq(u32 BE) body(msgpack) tag(16) where
``tag = HMAC-SHA256(key, everything before it)[:16]``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from typing import Any, NamedTuple

import msgpack

from gateway.errors import ProtocolError

VERSION = 0x02
# v1: firmware before reports stated their held seqs (``h``); still parsed and answered in kind.
VERSIONS = frozenset({0x01, VERSION})
FRAME_REPORT = 0x01
FRAME_ACK = 0x02
FRAME_CONFIG = 0x03
FRAME_TYPES = frozenset({FRAME_REPORT, FRAME_ACK, FRAME_CONFIG})
TAG_LEN = 16
MIN_FRAME = 25
MAX_FRAME = 1024
MAX_ID_LEN = 32
_ID_RE = re.compile(rb"[A-Za-z0-9._-]{1,32}\Z")
_U32 = struct.Struct(">I")


class Frame(NamedTuple):
    """A parsed (not yet authenticated) frame (immutable; a NamedTuple because one is built per
    received frame and a frozen dataclass costs several times more to construct).

    Attributes:
        version: protocol version byte.
        type: FRAME_REPORT, FRAME_ACK or FRAME_CONFIG.
        device_id: ASCII device id from the header.
        seq: u32 from the header.
        body: raw msgpack bytes of the body.
        tag: the 16-byte truncated HMAC.
        signed: the bytes the tag covers (header + body).
    """

    version: int
    type: int
    device_id: str
    seq: int
    body: bytes
    tag: bytes
    signed: bytes


def valid_device_id(device_id: str) -> bool:
    """Return True if ``device_id`` is 1..32 chars of ``[A-Za-z0-9._-]``."""
    try:
        raw = device_id.encode("ascii")
    except UnicodeEncodeError:
        return False
    return _ID_RE.match(raw) is not None


def compute_tag(key: bytes, signed: bytes) -> bytes:
    """Return the 16-byte truncated HMAC-SHA256 of ``signed`` under ``key``."""
    return hmac.new(key, signed, hashlib.sha256).digest()[:TAG_LEN]


TagKey = hmac.HMAC
"""A device key as an HMAC-SHA256 object that has taken the key and nothing else (:func:`tag_key`). It is key
material: keep it where the key itself is kept (the verifier caches it with the key, for as long), never log it."""


def tag_key(key: bytes) -> TagKey:
    """The HMAC-SHA256 state of ``key`` before any message: :func:`keyed_tag` copies it per frame
    (``HMAC.copy``, the hmac module's way to share the key's setup among messages)."""
    return hmac.new(key, digestmod=hashlib.sha256)


def keyed_tag(key: TagKey, signed: bytes) -> bytes:
    """:func:`compute_tag` from the key's state (:func:`tag_key`): the same 16 bytes, without ``hmac.new``'s
    per-call key setup (about a third of its cost; bench/gateway_ingest.py's verification). A copy and an
    update of OpenSSL's HMAC for inputs of a frame's size keep the GIL (``hmac.digest`` releases it on
    every call, see bench/README.md)."""
    mac = key.copy()
    mac.update(signed)
    return mac.digest()[:TAG_LEN]


def build_frame(frame_type: int, device_id: str, seq: int, body: Any, key: bytes | TagKey,
                version: int = VERSION) -> bytes:
    """Build an authenticated frame.

    Args:
        frame_type: FRAME_REPORT, FRAME_ACK or FRAME_CONFIG.
        device_id: ASCII id, 1..32 chars of ``[A-Za-z0-9._-]``.
        seq: u32.
        body: a msgpack-serialisable map, or already-encoded msgpack ``bytes``.
        key: the 32-byte device key, or its HMAC state (:func:`tag_key`: the same tag, without the key setup).
        version: protocol version byte (an answer goes in the version of the frame it answers).

    Raises:
        ProtocolError: reason ``malformed`` for a bad id/seq/type/version, ``oversize`` if over 1024 bytes.
    """
    if frame_type not in FRAME_TYPES:
        raise ProtocolError("unknown frame type %r" % frame_type, reason="malformed")
    try:
        ident: bytes | None = device_id.encode("ascii")
    except UnicodeEncodeError:
        ident = None
    if ident is None or _ID_RE.match(ident) is None:
        raise ProtocolError("invalid device id %r" % device_id, reason="malformed")
    if not 0 <= seq <= 0xFFFFFFFF:
        raise ProtocolError("seq %r out of u32 range" % seq, reason="malformed")
    raw_body = body if isinstance(body, (bytes, bytearray)) else msgpack.packb(body, use_bin_type=True)
    if not raw_body:
        raise ProtocolError("empty body", reason="malformed")
    if version not in VERSIONS:
        raise ProtocolError("unknown protocol version %r" % version, reason="malformed")
    signed = b"".join((bytes((version, frame_type, len(ident))), ident, _U32.pack(seq), raw_body))
    frame = signed + (keyed_tag(key, signed) if isinstance(key, hmac.HMAC) else compute_tag(key, signed))
    if len(frame) > MAX_FRAME:
        raise ProtocolError("frame of %d bytes exceeds %d" % (len(frame), MAX_FRAME), reason="oversize")
    return frame


# Device ids already matched against _ID_RE, as their str: a gateway hears the same few hundred ids
# over and over, and the regex and decode were a fifth of parse_frame. Cleared when full, so a flood
# of made-up ids cannot grow it.
_KNOWN_IDS: dict[bytes, str] = {}
_KNOWN_IDS_MAX = 4096


def parse_frame(data: bytes) -> Frame:
    """Split a frame into its fields without checking the tag.

    Raises:
        ProtocolError: ``oversize`` (> 1024 bytes, checked first, nothing decoded), ``version``
            (unknown version byte), ``malformed`` (too short, bad type, bad id, no body).
    """
    n = len(data)
    if n > MAX_FRAME:
        raise ProtocolError("frame of %d bytes exceeds %d" % (n, MAX_FRAME), reason="oversize")
    if n < 1:
        raise ProtocolError("empty frame", reason="malformed")
    version = data[0]
    if version not in VERSIONS:
        raise ProtocolError("unknown protocol version %d" % version, reason="version")
    if n < MIN_FRAME:
        raise ProtocolError("frame of %d bytes is shorter than %d" % (n, MIN_FRAME), reason="malformed")
    ftype = data[1]
    if ftype not in FRAME_TYPES:
        raise ProtocolError("unknown frame type %d" % ftype, reason="malformed")
    id_len = data[2]
    if not 1 <= id_len <= MAX_ID_LEN:
        raise ProtocolError("device id length %d out of 1..32" % id_len, reason="malformed")
    body_start = 3 + id_len + 4
    body_end = n - TAG_LEN
    if body_end - body_start < 1:
        raise ProtocolError("frame has no body", reason="malformed")
    data = bytes(data)  # slices of bytes are bytes (a bytearray from a decoder is copied once)
    ident = data[3 : 3 + id_len]
    device_id = _KNOWN_IDS.get(ident)
    if device_id is None:
        if _ID_RE.match(ident) is None:
            raise ProtocolError("device id contains characters outside [A-Za-z0-9._-]", reason="malformed")
        device_id = ident.decode("ascii")
        if len(_KNOWN_IDS) >= _KNOWN_IDS_MAX:
            _KNOWN_IDS.clear()
        _KNOWN_IDS[ident] = device_id
    # tuple.__new__: the fields in order without NamedTuple's Python-level __new__ (~0.3 µs per frame)
    return tuple.__new__(Frame, (version, ftype, device_id, _U32.unpack_from(data, 3 + id_len)[0],
                                 data[body_start:body_end], data[body_end:], data[:body_end]))


def verify_tag(frame: Frame, key: bytes) -> bool:
    """Return True if the frame's tag verifies under ``key`` (constant-time compare)."""
    return hmac.compare_digest(compute_tag(key, frame.signed), frame.tag)


def verify_keyed_tag(frame: Frame, key: TagKey) -> bool:
    """:func:`verify_tag` with the key's precomputed states (:func:`tag_key`); constant-time compare."""
    return hmac.compare_digest(keyed_tag(key, frame.signed), frame.tag)


def decode_body(body: bytes) -> dict[str, Any]:
    """Decode a msgpack body that must be exactly one map.

    Raises:
        ProtocolError: reason ``body`` if it is not valid msgpack, has trailing bytes, or is not a map.
    """
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except (msgpack.ExtraData, ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError("body is not one msgpack object: %s" % type(exc).__name__, reason="body") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("body is a %s, not a map" % type(obj).__name__, reason="body")
    return obj
