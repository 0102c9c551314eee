"""docs/protocol-vectors.json is what the firmware produces under MicroPython.

The generator below runs in the real MicroPython runtime with ``firmware/lib``; the test
re-generates the vectors and compares them to the committed file. To regenerate after a
deliberate protocol change (which also bumps the protocol version):

    .venv/bin/python tests/firmware/test_wire_vectors.py --write

CPython verification of the same file (``msgpack``, ``hmac``) is tests/unit/test_protocol_vectors.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "docs" / "protocol-vectors.json"

GENERATOR = r'''
import binascii, json
from civic.wire import msgpack, cobs, frame, ble_frag, hmac256

def h(b):
    return binascii.hexlify(b).decode()

KEY = bytes(range(32))
KEY2 = binascii.unhexlify("c0ffee" * 10 + "0102")
MSGPACK = [
    "None", "True", "False", "0", "127", "128", "255", "256", "65535", "65536", "4294967295",
    "4294967296", "18446744073709551615", "-1", "-32", "-33", "-128", "-129", "-32768", "-32769",
    "-2147483648", "-2147483649", "-9223372036854775808", "''", "'win'", "'a' * 31", "'a' * 32",
    "'b' * 256", "'\u00e9t\u00e9 \u2603 \U0001f600'", "b''", "b'\\x00\\xff'", "b'z' * 256", "[]", "[1, [2, [3]]]",
    "list(range(16))", "{}", "{'t': 1795000000}", "{'m': {'mot': 17}}", "dict((str(i), i) for i in range(16))",
    "{'courtesy_s': 60, 'dim_schedule': [[22, 50], [1, 30]]}",
]
out = {"version": frame.VERSION, "msgpack": [], "hmac": [], "cobs": [], "frames": [], "serial": [], "ble_fragments": []}
for expr in MSGPACK:
    v = eval(expr)
    out["msgpack"].append({"expr": expr, "hex": h(msgpack.encode(v))})
for key, msg in ((KEY, b""), (KEY, b"civicedge"), (b"k" * 100, b"long key is hashed first")):
    out["hmac"].append({"key": h(key), "msg": h(msg), "digest": h(hmac256.digest(key, msg))})
for data in (b"", b"\x00", b"\x00\x00", b"\x11\x22\x00\x33", b"\x11\x00", bytes(range(1, 255)),
             bytes(range(1, 256)), b"\x01" * 300, b"\x00" + b"\x01" * 254 + b"\x00"):
    out["cobs"].append({"data": h(data), "encoded": h(cobs.encode(data))})
BODIES = [
    ("report_streetlight_win", frame.REPORT, "sl-0001", 1, KEY,
     {"t": "win", "k": "streetlight", "w": 1795000500, "l": 900,
      "m": {"lux": 120, "lvl": 40, "lamp": 0}, "fw": "0.1.0", "h": []}),
    # The noisy count's release: its own win report over its release period (6 h, aligned), as the
    # shipped policy has it (protocol §2); a 15-min window carrying mot is refused by the gateway.
    ("report_streetlight_mot_release", frame.REPORT, "sl-0001", 5, KEY,
     {"t": "win", "k": "streetlight", "w": 1794981600, "l": 21600, "m": {"mot": 17}, "e": {"mot": 500},
      "fw": "0.1.0", "h": [1]}),
    ("report_streetlight_hour", frame.REPORT, "sl-0001", 2, KEY,
     {"t": "hour", "k": "streetlight", "w": 1794999600, "l": 3600, "m": {"wh": 33}, "h": [1, 1]}),
    ("report_bin_alarm", frame.REPORT, "bin-07.north_2", 4294967295, KEY2,
     {"t": "alarm", "k": "bin", "w": 1795000500, "l": 60, "m": {"temp": 71}, "a": ["fire"],
      "h": [70, 75, 77, 77, 4294967200, 4294967294]}),
    ("report_bin_day_suppressed", frame.REPORT, "bin-07.north_2", 77, KEY2,
     {"t": "day", "k": "bin", "w": 1794960000, "l": 86400, "m": {}, "e": {"lid": 500}, "h": [70, 75]}),
    ("ack", frame.ACK, "sl-0001", 2, KEY, {"t": 1795000600}),
    ("config", frame.CONFIG, "sl-0001", 3, KEY, {"courtesy_s": 45}),
]
for name, t, dev, seq, key, body in BODIES:
    b = msgpack.encode(body)
    f = frame.build(t, dev, seq, b, key)
    out["frames"].append({"name": name, "type": t, "device_id": dev, "seq": seq, "key": h(key),
                          "body": h(b), "frame": h(f), "tag": h(f[-16:])})
    if t == frame.REPORT:
        out["serial"].append({"name": name, "wire": h(cobs.encode(f) + b"\x00")})
for name, mtu, msg in (("report_streetlight_win", 23, 0), ("report_bin_alarm", 23, 255), ("ack", 23, 7),
                       ("report_streetlight_win", 185, 1)):
    f = [x for x in out["frames"] if x["name"] == name][0]["frame"]
    frags = ble_frag.fragment(binascii.unhexlify(f), mtu, msg)
    out["ble_fragments"].append({"name": name, "mtu": mtu, "msg": msg, "fragments": [h(x) for x in frags]})
print(json.dumps(out))
'''


def generate() -> dict[str, Any]:
    """Run the generator in MicroPython and return the vectors."""
    from gateway.resources import firmware_dir
    from hil.sim.mprun import run_micropython

    res = run_micropython(GENERATOR, libs=[firmware_dir() / "lib"])
    data: dict[str, Any] = json.loads(res.stdout)
    data["generated_by"] = ("firmware/lib/civic under MicroPython 1.27 (WebAssembly port); "
                            "regenerate with: .venv/bin/python tests/firmware/test_wire_vectors.py --write")
    data["keys_are_test_keys"] = True
    return data


def render(data: dict[str, Any]) -> str:
    """Return the file text for ``data`` (stable formatting)."""
    return json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def test_committed_vectors_are_what_the_firmware_produces() -> None:
    assert VECTORS.is_file(), "run: .venv/bin/python tests/firmware/test_wire_vectors.py --write"
    assert render(generate()) == VECTORS.read_text(encoding="utf-8")


def test_vectors_cover_the_spec() -> None:
    data = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert {f["type"] for f in data["frames"]} == {1, 2, 3}
    assert any(v["mtu"] == 23 and len(v["fragments"]) > 1 for v in data["ble_fragments"])
    assert len(data["msgpack"]) >= 30 and len(data["cobs"]) >= 8


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: test_wire_vectors.py --write")
    VECTORS.write_text(render(generate()), encoding="utf-8")
    print(f"wrote {VECTORS}")
