"""COBS, HMAC-SHA256, frames and BLE fragments of the firmware, run in MicroPython."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import Callable

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.sim.mprun import MpResult

FULL = os.environ.get("CIVICEDGE_FULL") == "1"
SETTINGS = settings(max_examples=20 if FULL else 3, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
KEY = bytes(range(32))


def _cobs_ref(data: bytes) -> bytes:
    """Straightforward reference COBS encoder (minimal form) for comparison."""
    out = bytearray()
    block = bytearray()
    for b in data:
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out += b"\xff" + block
                block = bytearray()
    if block or not data or data[-1] == 0 or len(out) == 0:
        out += bytes([len(block) + 1]) + block
    return bytes(out)


@SETTINGS
@given(st.lists(st.one_of(st.binary(max_size=600), st.binary(max_size=8).map(lambda b: b * 80)), min_size=30, max_size=60))
def test_cobs_round_trip_and_no_zero(mpy: Callable[..., MpResult], batch: list[bytes]) -> None:
    code = (
        "import binascii\nfrom civic.wire import cobs\n"
        f"for h in {[b.hex() for b in batch]!r}:\n"
        "    e = cobs.encode(binascii.unhexlify(h))\n"
        "    assert cobs.decode(e) == binascii.unhexlify(h)\n"
        "    print(binascii.hexlify(e).decode() or '-')\n"
    )
    out = mpy(code).stdout.split()
    assert len(out) == len(batch)
    for data, h in zip(batch, out):
        enc = bytes.fromhex(h)
        assert 0 not in enc
        assert len(enc) <= len(data) + len(data) // 254 + 1
        assert enc == _cobs_ref(data), data.hex()


def test_cobs_decode_rejects_bad_chunks(mpy: Callable[..., MpResult]) -> None:
    bad = ["", "00", "0511", "020100", "03410042", "ff" + "41" * 10]
    code = (
        "import binascii\nfrom civic.wire import cobs\n"
        f"for h in {bad!r}:\n"
        "    try:\n        cobs.decode(binascii.unhexlify(h))\n        print('ACCEPTED', h)\n"
        "    except ValueError as e:\n        print('ERR')\n"
    )
    assert mpy(code).stdout.split() == ["ERR"] * len(bad)


@SETTINGS
@given(st.lists(st.tuples(st.binary(max_size=100), st.binary(max_size=300)), min_size=20, max_size=40))
def test_hmac_matches_cpython(mpy: Callable[..., MpResult], pairs: list[tuple[bytes, bytes]]) -> None:
    code = (
        "import binascii\nfrom civic.wire import hmac256\n"
        f"for k, m in {[(k.hex(), m.hex()) for k, m in pairs]!r}:\n"
        "    print(binascii.hexlify(hmac256.digest(binascii.unhexlify(k), binascii.unhexlify(m))).decode())\n"
    )
    out = mpy(code).stdout.split()
    assert out == [hmac.new(k, m, hashlib.sha256).hexdigest() for k, m in pairs]


def test_constant_time_compare(mpy: Callable[..., MpResult]) -> None:
    code = (
        "from civic.wire.hmac256 import compare\n"
        "print(compare(b'abc', b'abc'), compare(b'abc', b'abd'), compare(b'abc', b'ab'), compare(b'', b''))\n"
    )
    assert mpy(code).stdout.split() == ["True", "False", "False", "True"]


def _cpython_frame(ftype: int, dev: str, seq: int, body: bytes, key: bytes) -> bytes:
    # protocol v2
    head = struct.pack(">BBB", 2, ftype, len(dev)) + dev.encode() + struct.pack(">I", seq) + body
    return head + hmac.new(key, head, hashlib.sha256).digest()[:16]


def test_frame_build_matches_spec_and_parses(mpy: Callable[..., MpResult]) -> None:
    body = msgpack.packb({"t": "win"}, use_bin_type=True)
    code = (
        "import binascii\nfrom civic.wire import frame\n"
        f"key = bytes(range(32)); body = binascii.unhexlify({body.hex()!r})\n"
        "for t, d, s in ((1, 'sl-0001', 1), (2, 'a', 0), (3, 'B.b_c-9' * 4 + 'abcd', 2**32 - 1)):\n"
        "    f = frame.build(t, d, s, body, key)\n"
        "    print(binascii.hexlify(f).decode())\n"
        "    assert frame.parse(f, key) == (t, d, s, body)\n"
        "    assert frame.parse(f) == (t, d, s, body)\n"
    )
    out = mpy(code).stdout.split()
    want = [_cpython_frame(1, "sl-0001", 1, body, KEY), _cpython_frame(2, "a", 0, body, KEY),
            _cpython_frame(3, "B.b_c-9" * 4 + "abcd", 2**32 - 1, body, KEY)]
    assert out == [w.hex() for w in want]


def test_frame_parse_errors_have_codes(mpy: Callable[..., MpResult]) -> None:
    good = _cpython_frame(1, "sl-1", 7, b"\x80", KEY)
    cases = {
        "short": good[:24], "oversize": good[:-16] + b"\x00" * 1010 + good[-16:],
        "version": b"\x03" + good[1:], "type": good[:1] + b"\x09" + good[2:],
        "id": good[:2] + b"\x00" + good[3:], "tag": good[:-1] + bytes([good[-1] ^ 1]),
    }
    bad_id = _cpython_frame(1, "sl 1", 7, b"\x80", KEY)
    code = (
        "import binascii\nfrom civic.wire import frame\nkey = bytes(range(32))\n"
        f"for want, h in {[(k, v.hex()) for k, v in cases.items()] + [('id', bad_id.hex())]!r}:\n"
        "    try:\n        frame.parse(binascii.unhexlify(h), key)\n        print('ACCEPTED', want)\n"
        "    except frame.FrameError as e:\n        print(want, e.code)\n"
        "for args in ((9, 'a', 1, b'x'), (1, '', 1, b'x'), (1, 'a/b', 1, b'x'), (1, 'a', -1, b'x'),\n"
        "             (1, 'a', 2**32, b'x'), (1, 'a', 1, b''), (1, 'a', 1, b'x' * 1001)):\n"
        "    try:\n        frame.build(*args, key)\n        print('BUILT')\n"
        "    except frame.FrameError as e:\n        print('build', e.code)\n"
    )
    lines = mpy(code).stdout.splitlines()
    for line in lines[:7]:
        want, got = line.split()
        assert want == got, line
    assert lines[7:] == ["build type", "build id", "build id", "build seq", "build seq", "build body", "build oversize"]


def test_frame_wrong_key_fails(mpy: Callable[..., MpResult]) -> None:
    f = _cpython_frame(2, "sl-1", 3, b"\x81\xa1t\x01", KEY)
    code = (
        "import binascii\nfrom civic.wire import frame\n"
        f"f = binascii.unhexlify({f.hex()!r})\n"
        "print(frame.parse(f, bytes(range(32)))[2])\n"
        "try:\n    frame.parse(f, bytes(32))\nexcept frame.FrameError as e:\n    print(e.code)\n"
    )
    assert mpy(code).stdout.split() == ["3", "tag"]


@SETTINGS
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=1024), st.integers(23, 300), st.integers(0, 255)),
                min_size=10, max_size=20))
def test_fragment_reassemble_round_trip(mpy: Callable[..., MpResult], cases: list[tuple[bytes, int, int]]) -> None:
    code = (
        "import binascii\nfrom civic.wire import ble_frag\nr = ble_frag.Reassembler()\n"
        f"for h, mtu, msg in {[(d.hex(), m, c) for d, m, c in cases]!r}:\n"
        "    data = binascii.unhexlify(h)\n"
        "    frags = ble_frag.fragment(data, mtu, msg)\n"
        "    assert all(len(f) <= mtu - 3 for f in frags)\n"
        "    outs = [r.feed(f) for f in frags]\n"
        "    assert outs[-1] == data and all(o is None for o in outs[:-1])\n"
        "    print(len(frags), frags[0][0], frags[-1][1])\n"
        "print('dropped', r.dropped)\n"
    )
    lines = mpy(code).stdout.splitlines()
    for (data, mtu, msg), line in zip(cases, lines):
        n, m, last = map(int, line.split())
        per = mtu - 5
        assert n == -(-len(data) // per)
        assert m == msg and last == 0x80 | (n - 1)
    assert lines[-1] == "dropped 0"


def test_fragment_mtu_23_layout_and_drop_rules(mpy: Callable[..., MpResult]) -> None:
    code = (
        "from civic.wire import ble_frag\n"
        "f = ble_frag.fragment(bytes(range(40)), 23, 7)\n"
        "print([len(x) for x in f], [x[1] for x in f], f[1][2:4] == bytes((18, 19)))\n"
        "r = ble_frag.Reassembler()\n"
        # skipped index: partial dropped
        "print(r.feed(f[0]), r.feed(f[2]), r.dropped)\n"
        # different msg while partial: partial dropped, the new message starts
        "g = ble_frag.fragment(b'hello world, this is a frame', 23, 8)\n"
        "r.feed(f[0]); out = [r.feed(x) for x in g]; print(out[-1], r.dropped)\n"
        # continuation without start, too-short fragment, disconnect mid-message
        "r.feed(f[1]); r.feed(b'\\x01'); r.feed(f[0]); r.reset(); print(r.dropped)\n"
        "print(r.feed(f[0]), r.feed(f[1]), r.feed(f[2]) == bytes(range(40)))\n"
        "try:\n    ble_frag.fragment(b'x', 22, 0)\nexcept ValueError:\n    print('mtu22 refused')\n"
        "try:\n    ble_frag.fragment(b'x' * (18 * 128 + 1), 23, 0)\nexcept ValueError:\n    print('too many refused')\n"
    )
    lines = mpy(code).stdout.splitlines()
    assert lines[0] == "[20, 20, 6] [0, 1, 130] True"
    assert lines[1] == "None None 2"  # the skip drops the partial, the orphan fragment too
    assert lines[2] == "b'hello world, this is a frame' 3"
    assert lines[3] == "6"
    assert lines[4] == "None None True"
    assert lines[5:] == ["mtu22 refused", "too many refused"]


def test_cobs_edge_cases(mpy: Callable[..., MpResult]) -> None:
    cases = [b"", b"\x00", b"\x00" * 3, b"\x01" * 253, b"\x01" * 254, b"\x01" * 255, b"\x01" * 254 + b"\x00",
             b"\x00" + b"\x01" * 254, b"\x01" * 508, bytearray(b"\x05\x00\x06")]
    code = (
        "import binascii\nfrom civic.wire import cobs\n"
        f"for h in {[bytes(c).hex() for c in cases]!r}:\n"
        "    d = bytearray(binascii.unhexlify(h))\n"
        "    e = cobs.encode(d)\n"
        "    assert cobs.decode(bytearray(e)) == bytes(d)\n"
        "    print(binascii.hexlify(e).decode())\n"
    )
    assert mpy(code).stdout.split() == [_cobs_ref(bytes(c)).hex() for c in cases]


@SETTINGS
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=120), st.integers(0, 255)), min_size=3, max_size=8),
       st.lists(st.sampled_from(["keep", "keep", "keep", "drop", "dup", "swap"]), min_size=80, max_size=80))
def test_reassembler_never_splices_frames(mpy: Callable[..., MpResult], frames: list[tuple[bytes, int]],
                                          ops: list[str]) -> None:
    """Lost, duplicated and reordered fragments never produce a frame that was not sent."""
    code = (
        "import binascii\nfrom civic.wire import ble_frag\n"
        f"frames = [(binascii.unhexlify(h), m) for h, m in {[(f.hex(), m) for f, m in frames]!r}]\n"
        f"ops = {ops!r}\n"
        "stream = []\n"
        "for i, (f, m) in enumerate(frames):\n    stream += ble_frag.fragment(f, 23, (m + i) & 0xFF)\n"
        "out = []\ni = 0\nr = ble_frag.Reassembler()\n"
        "for k, frag in enumerate(stream):\n"
        "    op = ops[k % len(ops)]\n"
        "    seq = [] if op == 'drop' else [frag, frag] if op == 'dup' else [frag]\n"
        "    for x in seq:\n        got = r.feed(x)\n        if got is not None:\n            out.append(got)\n"
        "sent = set(f for f, _ in frames)\n"
        "print(all(o in sent for o in out), len(out), r.dropped)\n"
    )
    ok, _n, _dropped = mpy(code).stdout.split()
    assert ok == "True"
