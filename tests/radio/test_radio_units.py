"""Pure unit tests: radio URLs, addresses, advertising-data parsing; the relay's command line."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.sim.radio.address import board_address, board_address_bytes, random_static_address
from hil.sim.radio.advdata import parse_ad_structures
from hil.sim.radio.errors import RadioUrlError
from hil.sim.radio.url import parse_radio_url
from tests.radio.conftest import SERVICE

FULL = __import__("os").environ.get("CIVICEDGE_FULL") == "1"


def test_radio_url_forms() -> None:
    assert parse_radio_url("ws://127.0.0.1:9000/room-1").url == "ws://127.0.0.1:9000/room-1"
    assert parse_radio_url("link-relay:ws://localhost:9000/x").room == "x"
    assert parse_radio_url("ws://127.0.0.1:9000").room == "civicedge"
    assert parse_radio_url("ws://127.0.0.1:9000/").transport_spec == "ws-client:ws://127.0.0.1:9000/civicedge"


@pytest.mark.parametrize("bad", ["", "http://127.0.0.1:9/x", "ws://:9/x", "ws://127.0.0.1/x",
                                 "ws://127.0.0.1:99999/x", "ws://127.0.0.1:9/a/b", "ws://127.0.0.1:9/bad room"])
def test_radio_url_rejects(bad: str) -> None:
    with pytest.raises(RadioUrlError) as info:
        parse_radio_url(bad)
    assert info.value.url == bad


def test_board_address_is_static_random_and_stable() -> None:
    raw = board_address_bytes("sl-0001")
    assert raw[0] & 0xC0 == 0xC0
    assert board_address("sl-0001") == board_address("sl-0001") != board_address("sl-0002")
    assert int(random_static_address().split(":")[0], 16) & 0xC0 == 0xC0


def _ad(ad_type: int, value: bytes) -> bytes:
    return bytes([len(value) + 1, ad_type]) + value


def test_parse_civicedge_advertisement() -> None:
    data = (_ad(0x01, b"\x06") + _ad(0x07, uuid.UUID(SERVICE).bytes[::-1]) + _ad(0x09, b"sl-1")
            + _ad(0x03, b"\x0f\x18") + _ad(0x0A, b"\xf4") + _ad(0xFF, b"\xe5\x02hi") + _ad(0x16, b"\x0f\x18\x55"))
    parsed = parse_ad_structures(data)
    assert parsed.local_name == "sl-1"
    assert parsed.service_uuids == [SERVICE, "0000180f-0000-1000-8000-00805f9b34fb"]
    assert parsed.tx_power == -12
    assert parsed.manufacturer_data == {0x02E5: b"hi"}
    assert parsed.service_data == {"0000180f-0000-1000-8000-00805f9b34fb": b"\x55"}


def test_parse_stops_at_malformed_length() -> None:
    parsed = parse_ad_structures(_ad(0x09, b"ok") + bytes([30, 0x09]) + b"short")
    assert parsed.local_name == "ok"


@settings(max_examples=500 if FULL else 60, deadline=None)
@given(st.binary(max_size=62))
def test_parse_never_raises(data: bytes) -> None:
    parse_ad_structures(data)


@pytest.mark.timeout(30)
def test_standalone_relay_prints_url_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "hil.sim.radio", "--json"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert parse_radio_url(info["url"]).port == info["port"] > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_mpy_bluetooth_module_compiles_with_mpy_cross(tmp_path: pathlib.Path) -> None:
    from hil.sim import SIM_DIR

    source = SIM_DIR / "mpy" / "bluetooth.py"
    out = tmp_path / "bluetooth.mpy"
    proc = subprocess.run([sys.executable, "-m", "mpy_cross", str(source), "-o", str(out)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:1] == b"M"  # .mpy header
