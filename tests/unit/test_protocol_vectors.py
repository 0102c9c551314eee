"""docs/protocol-vectors.json (produced by the firmware under MicroPython) verified in CPython.

Independent of the firmware code: CPython ``msgpack``, ``hmac`` and the byte layout of
docs/protocol.md are the reference.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "protocol-vectors.json"


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert data["version"] == 2  # protocol v2
    return data


def _cobs_decode(data: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(data):
        code = data[i]
        assert code != 0 and i + code <= len(data)
        out += data[i + 1:i + code]
        i += code
        if code != 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


def _has_multikey_map(v: Any) -> bool:
    if isinstance(v, dict):
        return len(v) > 1 or any(_has_multikey_map(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(_has_multikey_map(x) for x in v)
    return False


def _as_msgpack_value(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_as_msgpack_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _as_msgpack_value(x) for k, x in v.items()}
    return v


def test_msgpack_vectors(vectors: dict[str, Any]) -> None:
    for item in vectors["msgpack"]:
        value = eval(item["expr"], {"__builtins__": {"range": range, "list": list, "dict": dict, "str": str}})  # noqa: S307 - our own file
        got = bytes.fromhex(item["hex"])
        assert msgpack.unpackb(got, raw=False, strict_map_key=False) == _as_msgpack_value(value), item
        if _has_multikey_map(value):
            # key order is the device's; the encoding must still be the smallest for each item
            assert msgpack.packb(msgpack.unpackb(got, strict_map_key=False), use_bin_type=True) == got
        else:
            assert msgpack.packb(value, use_bin_type=True) == got, item["expr"]


def test_hmac_vectors(vectors: dict[str, Any]) -> None:
    for item in vectors["hmac"]:
        want = hmac.new(bytes.fromhex(item["key"]), bytes.fromhex(item["msg"]), hashlib.sha256).hexdigest()
        assert item["digest"] == want


def test_cobs_vectors(vectors: dict[str, Any]) -> None:
    for item in vectors["cobs"]:
        enc = bytes.fromhex(item["encoded"])
        assert 0 not in enc
        assert _cobs_decode(enc) == bytes.fromhex(item["data"])


def test_frame_vectors_follow_the_spec(vectors: dict[str, Any]) -> None:
    for item in vectors["frames"]:
        f = bytes.fromhex(item["frame"])
        key = bytes.fromhex(item["key"])
        dev = item["device_id"].encode()
        assert 25 <= len(f) <= 1024
        assert f[0] == 2 and f[1] == item["type"] and f[2] == len(dev) and f[3:3 + len(dev)] == dev
        assert struct.unpack(">I", f[3 + len(dev):7 + len(dev)])[0] == item["seq"]
        body = f[7 + len(dev):-16]
        assert body.hex() == item["body"]
        assert hmac.compare_digest(f[-16:], hmac.new(key, f[:-16], hashlib.sha256).digest()[:16])
        assert f[-16:].hex() == item["tag"]
        decoded = msgpack.unpackb(body, raw=False)
        assert isinstance(decoded, dict)
        if item["type"] == 1:
            assert set(decoded) <= {"t", "k", "w", "l", "m", "e", "a", "fw", "h"} and "h" in decoded
            assert decoded["w"] % decoded["l"] == 0
            assert all(isinstance(v, int) for v in decoded["m"].values())
        elif item["type"] == 2:
            assert isinstance(decoded["t"], int)


def test_a_flipped_bit_breaks_the_tag(vectors: dict[str, Any]) -> None:
    item = vectors["frames"][0]
    f = bytearray.fromhex(item["frame"])
    f[5] ^= 0x01
    tag = hmac.new(bytes.fromhex(item["key"]), bytes(f[:-16]), hashlib.sha256).digest()[:16]
    assert not hmac.compare_digest(tag, bytes(f[-16:]))


def test_serial_vectors(vectors: dict[str, Any]) -> None:
    frames = {f["name"]: bytes.fromhex(f["frame"]) for f in vectors["frames"]}
    assert vectors["serial"]
    for item in vectors["serial"]:
        wire = bytes.fromhex(item["wire"])
        assert wire.endswith(b"\x00") and 0 not in wire[:-1]
        assert _cobs_decode(wire[:-1]) == frames[item["name"]]


def test_ble_fragment_vectors(vectors: dict[str, Any]) -> None:
    frames = {f["name"]: bytes.fromhex(f["frame"]) for f in vectors["frames"]}
    for item in vectors["ble_fragments"]:
        frags = [bytes.fromhex(x) for x in item["fragments"]]
        assert all(len(x) <= item["mtu"] - 3 for x in frags)
        assert all(x[0] == item["msg"] for x in frags)
        assert [x[1] & 0x7F for x in frags] == list(range(len(frags)))
        assert [x[1] >> 7 for x in frags] == [0] * (len(frags) - 1) + [1]
        assert all(len(x) == item["mtu"] - 3 for x in frags[:-1])  # all but the last are full
        assert b"".join(x[2:] for x in frags) == frames[item["name"]]


def test_gateway_protocol_reads_the_firmware_vectors(vectors: dict[str, Any]) -> None:
    """The gateway's own decoders accept every frame, COBS chunk and fragment the firmware made."""
    import gateway.protocol.ble_fragments as gw_ble
    import gateway.protocol.cobs as gw_cobs
    import gateway.protocol.frame as gw_frame
    for item in vectors["frames"]:
        fr = gw_frame.parse_frame(bytes.fromhex(item["frame"]))
        assert gw_frame.verify_tag(fr, bytes.fromhex(item["key"]))
        assert (fr.device_id, fr.seq) == (item["device_id"], item["seq"])
    for item in vectors["cobs"]:
        assert gw_cobs.cobs_decode(bytes.fromhex(item["encoded"])) == bytes.fromhex(item["data"])
    frames = {f["name"]: bytes.fromhex(f["frame"]) for f in vectors["frames"]}
    for item in vectors["ble_fragments"]:
        made = gw_ble.fragment_frame(frames[item["name"]], item["mtu"], item["msg"])
        assert [x.hex() for x in made] == item["fragments"]


def test_every_report_vector_passes_the_shipped_policy_gate(vectors: dict[str, Any]) -> None:
    """A gateway built from these vectors must not have its first frame refused as ``policy``: each
    REPORT body keeps the shipped policy (periods, report types, quanta, k, epsilon)."""
    from gateway.pipeline.verify import PolicyGate
    from gateway.resources import load_policy

    gate = PolicyGate(load_policy())
    reports = [f for f in vectors["frames"] if f["type"] == 1]
    assert {f["name"] for f in reports} >= {"report_streetlight_win", "report_streetlight_mot_release"}
    for f in reports:
        body = msgpack.unpackb(bytes.fromhex(f["body"]), raw=False)
        assert gate.check(body, body["k"]) is None, (f["name"], gate.check(body, body["k"]))
