"""The frame tag from the key's precomputed HMAC state (gateway.protocol.frame.tag_key / keyed_tag) is the tag
``hmac.new`` gives, for any key length and message, and the verifier refuses what it refused before."""

from __future__ import annotations

import hashlib
import hmac
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ProtocolError
from gateway.protocol.frame import (FRAME_REPORT, TAG_LEN, build_frame, compute_tag, keyed_tag, parse_frame, tag_key,
                                    verify_keyed_tag, verify_tag)

EXAMPLES = 300 if os.environ.get("CIVICEDGE_FULL") == "1" else 60


@settings(max_examples=EXAMPLES, deadline=None)
@given(key=st.binary(min_size=0, max_size=200), msg=st.binary(min_size=0, max_size=1100))
def test_keyed_tag_is_hmac_sha256_truncated(key: bytes, msg: bytes) -> None:
    # keys shorter than, equal to and longer than SHA-256's 64-byte block (a longer key is hashed first)
    expected = hmac.new(key, msg, hashlib.sha256).digest()[:TAG_LEN]
    assert keyed_tag(tag_key(key), msg) == expected == compute_tag(key, msg)


def test_states_are_not_consumed_by_use() -> None:
    key = tag_key(bytes(range(32)))
    first = keyed_tag(key, b"one frame")
    keyed_tag(key, b"another frame, in between")
    assert keyed_tag(key, b"one frame") == first  # each tag starts from copies of the states


@settings(max_examples=EXAMPLES, deadline=None)
@given(flip=st.integers(min_value=0, max_value=10_000), seq=st.integers(min_value=1, max_value=2**32 - 1))
def test_verify_keyed_tag_agrees_with_verify_tag(flip: int, seq: int) -> None:
    key, other = bytes(range(32)), bytes(range(1, 33))
    frame = build_frame(FRAME_REPORT, "sl-1", seq, {"t": "win", "m": {"lux": 10}}, key)
    good = parse_frame(frame)
    assert verify_keyed_tag(good, tag_key(key)) and verify_tag(good, key)
    assert not verify_keyed_tag(good, tag_key(other)) and not verify_tag(good, other)
    bad = bytearray(frame)
    bad[flip % len(bad) if flip % len(bad) > 2 else 3] ^= 0x01  # any byte past version/type (still parses)
    try:
        tampered = parse_frame(bytes(bad))
    except ProtocolError:  # an id byte flipped outside [A-Za-z0-9._-]: refused before any tag
        return
    assert verify_keyed_tag(tampered, tag_key(key)) is verify_tag(tampered, key) is False
