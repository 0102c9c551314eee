"""Unit tests of the CPython wire protocol (frames, COBS, serial deframer, BLE fragments)."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ProtocolError
from gateway.protocol import (
    FRAME_ACK,
    FRAME_REPORT,
    FragmentReassembler,
    SerialDeframer,
    build_frame,
    cobs_decode,
    cobs_encode,
    decode_body,
    encode_serial,
    fragment_frame,
    parse_frame,
    verify_tag,
)

EXAMPLES = 200 if os.environ.get("CIVICEDGE_FULL") == "1" else 40
KEY = bytes(range(32))
BODY = {"t": "win", "k": "bin", "w": 900, "l": 900, "m": {"fill": 40}, "e": {}}


def test_cobs_known_vectors() -> None:
    assert cobs_encode(b"") == b"\x01"
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs_encode(bytes(range(1, 255))) == b"\xff" + bytes(range(1, 255))  # canonical: no trailing 0x01
    assert cobs_decode(b"\xff" + bytes(range(1, 255)) + b"\x01") == bytes(range(1, 255))  # accepted too
    assert cobs_encode(b"\x01" * 254 + b"\x00") == b"\xff" + b"\x01" * 254 + b"\x01\x01"
    assert cobs_encode(b"\x01" * 255) == b"\xff" + b"\x01" * 254 + b"\x02\x01"
    assert len(cobs_encode(b"\x01" * 1024)) == 1029


@settings(max_examples=EXAMPLES * 3)
@given(st.binary(max_size=1100))
def test_cobs_roundtrip(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc
    assert cobs_decode(enc) == data


def _canonical_cobs(data: bytes) -> bytes:
    """COBS as docs/protocol.md §5 defines it, one byte at a time: a zero or the 254th byte of a block ends
    it; the data ends with its open block (a full one as 0xFF, no empty 0x01 after it)."""
    out, block = bytearray(), bytearray()
    for i, byte in enumerate(data):
        if byte == 0:
            out += bytes([len(block) + 1]) + block
            block.clear()
            continue
        block.append(byte)
        if len(block) == 254 and i != len(data) - 1:
            out += b"\xff" + block
            block.clear()
    return bytes(out + bytes([255 if len(block) == 254 else len(block) + 1]) + block)


# Runs of non-zero bytes around the 254-byte block edge, joined by zeros: where the block-wise encoder
# could differ from the definition.
_RUNS = st.lists(st.one_of(st.integers(0, 3), st.integers(250, 258), st.integers(505, 510)), max_size=5).map(
    lambda lengths: b"\x00".join(b"\x07" * n for n in lengths))


@settings(max_examples=EXAMPLES * 3)
@given(st.one_of(st.binary(max_size=1100), _RUNS, _RUNS.map(lambda d: d + b"\x00")))
def test_cobs_encode_is_the_canonical_encoding(data: bytes) -> None:
    assert cobs_encode(data) == _canonical_cobs(data)


@pytest.mark.parametrize("bad", [b"", b"\x05\x01", b"\x02\x00", b"\x03\x01"])
def test_cobs_decode_rejects(bad: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        cobs_decode(bad)
    assert info.value.reason == "cobs"


def test_frame_roundtrip_and_tag() -> None:
    raw = build_frame(FRAME_REPORT, "sl-001", 7, BODY, KEY)
    frame = parse_frame(raw)
    assert (frame.version, frame.type, frame.device_id, frame.seq) == (2, FRAME_REPORT, "sl-001", 7)
    assert decode_body(frame.body) == BODY
    assert verify_tag(frame, KEY)
    assert not verify_tag(frame, bytes(32))
    flipped = bytearray(raw)
    flipped[15] ^= 1  # inside the body
    assert not verify_tag(parse_frame(bytes(flipped)), KEY)


def test_frame_layout_is_byte_exact() -> None:
    raw = build_frame(FRAME_ACK, "a", 0x01020304, {"t": 5}, KEY)
    assert raw[:8] == b"\x02\x02\x01a\x01\x02\x03\x04"
    v1 = build_frame(FRAME_ACK, "a", 0x01020304, {"t": 5}, KEY, version=1)  # the answer to older firmware
    assert v1[:1] == b"\x01" and parse_frame(v1).version == 1 and verify_tag(parse_frame(v1), KEY)
    assert raw[8:-16] == msgpack.packb({"t": 5})
    assert len(raw) == 8 + 4 + 16


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x03" + bytes(40), "version"),
        (b"\x00" + bytes(40), "version"),
        (b"\x01\x01\x01a\x00\x00\x00\x01", "malformed"),
        (b"\x01\x09\x01a" + bytes(30), "malformed"),
        (b"\x01\x01\x00" + bytes(30), "malformed"),
        (b"\x01\x01\x02a!" + bytes(30), "malformed"),
        (b"\x01" * 1025, "oversize"),
    ],
)
def test_parse_frame_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_frame(data)
    assert info.value.reason == reason


def test_build_frame_rejects_oversize_and_bad_id() -> None:
    with pytest.raises(ProtocolError) as info:
        build_frame(FRAME_REPORT, "x", 1, {"pad": "y" * 1100}, KEY)
    assert info.value.reason == "oversize"
    with pytest.raises(ProtocolError):
        build_frame(FRAME_REPORT, "bad id", 1, BODY, KEY)
    with pytest.raises(ProtocolError):
        build_frame(FRAME_REPORT, "x", 2**32, BODY, KEY)


@pytest.mark.parametrize("body", [b"\xc1", b"\x91\x01", msgpack.packb({"a": 1}) + b"\x01"])
def test_decode_body_rejects(body: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_body(body)
    assert info.value.reason == "body"


def test_deframer_resyncs_after_garbage_and_cut_frames() -> None:
    f1 = build_frame(FRAME_REPORT, "d1", 1, BODY, KEY)
    f2 = build_frame(FRAME_REPORT, "d1", 2, BODY, KEY)
    stream = b"\x00\x00" + encode_serial(f1)[:10] + b"\x00" + b"\x07junk\x00" + encode_serial(f1) + encode_serial(f2)
    deframer = SerialDeframer()
    out: list[bytes | ProtocolError] = []
    for i in range(0, len(stream), 7):  # arbitrary split points
        out += deframer.feed(stream[i : i + 7])
    frames = [o for o in out if isinstance(o, bytes)]
    errors = [o for o in out if isinstance(o, ProtocolError)]
    assert frames[-2:] == [f1, f2]
    assert all(e.reason == "cobs" for e in errors) and len(errors) >= 1


def test_deframer_bounds_its_buffer() -> None:
    deframer = SerialDeframer()
    out = deframer.feed(b"\x01" * 5000)
    assert out == []
    out = deframer.feed(b"\x00" + encode_serial(build_frame(FRAME_REPORT, "d", 1, BODY, KEY)))
    assert isinstance(out[0], ProtocolError) and out[0].reason == "oversize"
    assert isinstance(out[1], bytes)


@settings(max_examples=EXAMPLES)
@given(st.binary(min_size=1, max_size=1024), st.sampled_from([23, 27, 64, 185, 247]), st.integers(0, 255))
def test_fragments_roundtrip(frame: bytes, mtu: int, msg: int) -> None:
    frags = fragment_frame(frame, mtu, msg)
    assert all(len(f) <= mtu - 3 for f in frags)
    r = FragmentReassembler()
    out: list[bytes | ProtocolError] = []
    for f in frags:
        out += r.feed(f)
    assert out == [frame]


def test_mtu23_carries_18_bytes() -> None:
    frags = fragment_frame(bytes(40), 23, 9)
    assert [len(f) - 2 for f in frags] == [18, 18, 4]
    assert [f[1] for f in frags] == [0, 1, 0x82]
    with pytest.raises(ProtocolError):
        fragment_frame(bytes(10), 22, 0)


def test_reassembler_drop_rules() -> None:
    a = fragment_frame(bytes(range(50)), 23, 1)
    b = fragment_frame(bytes(range(100, 140)), 23, 2)
    r = FragmentReassembler()
    # different msg interrupts a partial: partial dropped (counted once), new one completes.
    out = r.feed(a[0]) + r.feed(b[0]) + r.feed(b[1]) + r.feed(b[2])
    assert [type(o) for o in out] == [ProtocolError, bytes]
    assert out[1] == bytes(range(100, 140))
    # a skipped index drops the message; its remaining fragments are not counted again.
    out = r.feed(a[0]) + r.feed(a[2])
    assert len(out) == 1 and isinstance(out[0], ProtocolError) and out[0].reason == "fragment"
    # reset on disconnect forgets a partial message silently.
    r.feed(a[0])
    r.reset()
    assert r.feed(b[0]) + r.feed(b[1]) + r.feed(b[2]) == [bytes(range(100, 140))]
    assert isinstance(r.feed(b"\x01")[0], ProtocolError)


def test_agrees_byte_for_byte_with_firmware_vectors(repo_root: Path) -> None:
    """Frames, COBS, serial wire bytes and BLE fragments made by gateway.protocol equal the firmware's."""
    import json

    vectors = json.loads((repo_root / "docs" / "protocol-vectors.json").read_text())
    frames = {}
    for item in vectors["frames"]:
        frame = parse_frame(bytes.fromhex(item["frame"]))
        rebuilt = build_frame(frame.type, item["device_id"], item["seq"], bytes.fromhex(item["body"]),
                              bytes.fromhex(item["key"]))
        assert rebuilt.hex() == item["frame"]
        frames[item["name"]] = rebuilt
    for item in vectors["cobs"]:
        assert cobs_encode(bytes.fromhex(item["data"])).hex() == item["encoded"]
    for item in vectors["serial"]:
        assert encode_serial(frames[item["name"]]).hex() == item["wire"]
    for item in vectors["ble_fragments"]:
        assert [f.hex() for f in fragment_frame(frames[item["name"]], item["mtu"], item["msg"])] == item["fragments"]
