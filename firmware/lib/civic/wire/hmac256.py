"""HMAC-SHA256 (RFC 2104) on ``hashlib.sha256``; MicroPython has no ``hmac`` module."""

import hashlib

_BLOCK = 64


def _xor_pad(key, pad):
    out = bytearray(_BLOCK)
    for i in range(_BLOCK):
        out[i] = (key[i] if i < len(key) else 0) ^ pad
    return bytes(out)


def digest(key, msg):
    """Return the 32-byte HMAC-SHA256 of ``msg`` under ``key`` (both bytes-like)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    inner = hashlib.sha256(_xor_pad(key, 0x36))
    inner.update(msg)
    outer = hashlib.sha256(_xor_pad(key, 0x5C))
    outer.update(inner.digest())
    return outer.digest()


def compare(a, b):
    """Constant-time equality of two byte strings (time depends on length only)."""
    if len(a) != len(b):
        return False
    acc = 0
    for i in range(len(a)):
        acc |= a[i] ^ b[i]
    return acc == 0
