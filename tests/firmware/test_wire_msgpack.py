"""The firmware's msgpack encoder/decoder, run in MicroPython, against CPython ``msgpack``."""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.sim.mprun import MicroPythonError, MpResult

FULL = os.environ.get("CIVICEDGE_FULL") == "1"

ints = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=-300, max_value=300),
    st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
                     -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)]),
)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
scalars = st.one_of(st.none(), st.booleans(), ints, st.binary(max_size=40), texts)
values = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=6),
        st.tuples(kids, kids),
        st.dictionaries(st.one_of(texts, st.integers(-1000, 1000)), kids, max_size=5),
    ),
    max_leaves=12,
)


def _encode_in_mpy(mpy: Callable[..., MpResult], exprs: list[str]) -> list[bytes | str]:
    """Encode each Python expression in MicroPython; return the encodings.

    Encodings over 4 KiB come back as ``"sha256:<hex>:<len>"`` (printing megabytes through
    the wasm console is slow).
    """
    code = (
        "import binascii, hashlib\nfrom civic.wire import msgpack\n"
        f"for v in [{', '.join(exprs)}]:\n"
        "    e = msgpack.encode(v)\n"
        "    if len(e) > 4096:\n"
        "        print('sha256:%s:%d' % (binascii.hexlify(hashlib.sha256(e).digest()).decode(), len(e)))\n"
        "    else:\n"
        "        print(binascii.hexlify(e).decode())\n"
    )
    out = mpy(code).stdout.split()
    assert len(out) == len(exprs)
    return [h if h.startswith("sha256:") else bytes.fromhex(h) for h in out]


def _has_multikey_dict(v: Any) -> bool:
    if isinstance(v, dict):
        return len(v) > 1 or any(_has_multikey_dict(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(_has_multikey_dict(x) for x in v)
    return False


def _normalise(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_normalise(x) for x in v]
    if isinstance(v, dict):
        return {k: _normalise(x) for k, x in v.items()}
    return v


def _check(value: Any, got: bytes | str) -> None:
    want = msgpack.packb(value, use_bin_type=True)
    if isinstance(got, str):  # digest of a long encoding; key order matches for these cases
        assert got == f"sha256:{hashlib.sha256(want).hexdigest()}:{len(want)}", value if len(want) < 200 else len(want)
        return
    if not _has_multikey_dict(value):
        assert got == want, (value, got.hex(), want.hex())
        return
    # MicroPython dicts do not keep insertion order: compare content, then check that the
    # encoder chose the smallest encoding for every item (re-pack in the wire's key order).
    back = msgpack.unpackb(got, raw=False, strict_map_key=False)
    assert back == _normalise(value)
    assert msgpack.packb(back, use_bin_type=True) == got
    assert len(got) == len(want)


@settings(max_examples=40 if FULL else 4, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(st.lists(values, min_size=60, max_size=150))
def test_encoder_matches_cpython_msgpack(mpy: Callable[..., MpResult], batch: list[Any]) -> None:
    got = _encode_in_mpy(mpy, [repr(v) for v in batch])
    for value, enc in zip(batch, got):
        _check(value, enc)


BOUNDARY_EXPRS = {
    # str lengths around fixstr/str8/str16/str32, counted in UTF-8 bytes
    "'a' * 31": "a" * 31, "'a' * 32": "a" * 32, "'a' * 255": "a" * 255, "'a' * 256": "a" * 256,
    "'é' * 20": "é" * 20, "'€' * 22000": "€" * 22000, "'a' * 65535": "a" * 65535, "'a' * 65536": "a" * 65536,
    "b'\\x00' * 255": b"\x00" * 255, "b'\\x01' * 256": b"\x01" * 256, "b'x' * 65535": b"x" * 65535,
    "b'x' * 65536": b"x" * 65536, "b''": b"", "bytearray(b'ab')": b"ab", "memoryview(b'abc')": b"abc",
    "list(range(15))": list(range(15)), "list(range(16))": list(range(16)),
    "[0] * 65535": [0] * 65535, "[None] * 65536": [None] * 65536,
    "dict((i, i) for i in range(15))": {i: i for i in range(15)},
    "dict((i, i) for i in range(16))": {i: i for i in range(16)},
    "dict((i, 0) for i in range(65536))": {i: 0 for i in range(65536)},
    "[[[[[[1]]]]]]": [[[[[[1]]]]]], "{'m': {'a': [1, {'b': b'c'}]}}": {"m": {"a": [1, {"b": b"c"}]}},
    "2**64 - 1": 2**64 - 1, "-(2**63)": -(2**63), "True": True, "False": False, "None": None, "()": [],
}


def test_encoder_boundaries(mpy: Callable[..., MpResult]) -> None:
    exprs = list(BOUNDARY_EXPRS)
    got = _encode_in_mpy(mpy, exprs)
    for expr, enc in zip(exprs, got):
        _check(BOUNDARY_EXPRS[expr], enc)


@pytest.mark.parametrize("expr, exc", [("2**64", "ValueError"), ("-(2**63) - 1", "ValueError"),
                                       ("1.5", "TypeError"), ("{1, 2}", "TypeError"),
                                       ("[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]", "ValueError")])
def test_encoder_rejects_unsupported(mpy: Callable[..., MpResult], expr: str, exc: str) -> None:
    code = f"from civic.wire import msgpack\ntry:\n    msgpack.encode({expr})\nexcept {exc} as e:\n    print('REJECTED', e)\n"
    assert "REJECTED msgpack:" in mpy(code).stdout


@settings(max_examples=20 if FULL else 3, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(st.lists(values, min_size=50, max_size=120))
def test_decoder_round_trips_cpython_msgpack(mpy: Callable[..., MpResult], batch: list[Any]) -> None:
    packed = [msgpack.packb(v, use_bin_type=True) for v in batch]
    code = (
        "import binascii\nfrom civic.wire import msgpack\n"
        f"for h in {[p.hex() for p in packed]!r}:\n"
        "    v = msgpack.decode(binascii.unhexlify(h))\n"
        "    print(binascii.hexlify(msgpack.encode(v)).decode())\n"
    )
    out = mpy(code).stdout.split()
    assert len(out) == len(batch)
    for value, h in zip(batch, out):
        _check(value, bytes.fromhex(h))


MALFORMED = {
    "": "truncated", "c1": "unsupported", "ca00000000": "unsupported", "cb" + "00" * 8: "unsupported",
    "d40100": "unsupported", "92 01": "truncated", "81a161": "truncated", "a3 6162": "truncated",
    "c405 6162": "truncated", "cd01": "truncated", "0101": "trailing", "a2c328": "UTF-8",
    "81 91 01 01": "unhashable", "dd ffffffff": "truncated", "91" * 20 + "01": "too deep",
}


def test_decoder_rejects_malformed(mpy: Callable[..., MpResult]) -> None:
    cases = {k.replace(" ", ""): v for k, v in MALFORMED.items()}
    code = (
        "import binascii\nfrom civic.wire import msgpack\n"
        f"for h in {list(cases)!r}:\n"
        "    try:\n        msgpack.decode(binascii.unhexlify(h))\n        print(h, 'ACCEPTED')\n"
        "    except ValueError as e:\n        print(h, 'ERR', e)\n"
    )
    lines = mpy(code).stdout.splitlines()
    assert len(lines) == len(cases)
    for line, (h, why) in zip(lines, cases.items()):
        assert line.startswith(h + " ERR msgpack:") or (h == "" and line.startswith(" ERR msgpack:")), line
        assert why in line, line


def test_decoder_reads_device_bodies(mpy: Callable[..., MpResult]) -> None:
    ack = msgpack.packb({"t": 1795000000}, use_bin_type=True)
    cfg = msgpack.packb({"dim_schedule": [[22, 50], [1, 30]], "courtesy_s": 60, "x": None, "b": True}, use_bin_type=True)
    code = (
        "import binascii\nfrom civic.wire import msgpack\n"
        f"a = msgpack.decode(binascii.unhexlify({ack.hex()!r}))\nprint(a['t'] + 1)\n"
        f"c = msgpack.decode(binascii.unhexlify({cfg.hex()!r}))\n"
        "print(c['dim_schedule'][1][1], c['courtesy_s'], c['x'], c['b'])\n"
    )
    assert mpy(code).stdout.split() == ["1795000001", "30", "60", "None", "True"]


def test_micropython_error_surfaces(mpy: Callable[..., MpResult]) -> None:
    with pytest.raises(MicroPythonError):
        mpy("from civic.wire import msgpack\nmsgpack.decode(b'\\xc1')\n")
