"""Selecting a real board by port, USB serial number or chip MAC (port list injected)."""

from __future__ import annotations

import os

import pytest

from hil.backends.errors import AmbiguousPortError, BackendError, NoMatchingPortError
from hil.backends.serial.select import (
    BoardSelector,
    PortInfo,
    list_serial_ports,
    normalize_mac,
    read_chip_mac,
    select_board,
)

PORTS = [
    PortInfo("/dev/ttyUSB0", serial_number="A5069RR4", vid=0x10C4, pid=0xEA60, description="CP2102"),
    PortInfo("/dev/ttyUSB1", serial_number="0001", vid=0x1A86, pid=0x7523, description="CH340"),
    PortInfo("/dev/ttyACM0", serial_number="0001", vid=0x303A, pid=0x1001, description="USB JTAG/serial"),
    PortInfo("/dev/ttyS0"),
]
MACS = {"/dev/ttyUSB0": "24:0A:C4:12:34:56", "/dev/ttyUSB1": "30aea4000001", "/dev/ttyACM0": "34-85-18-00-00-02"}


def fake_mac_reader(port: str) -> str:
    if port not in MACS:
        raise BackendError(f"no chip answers on {port}", port=port)
    return MACS[port]


def test_parse_selectors() -> None:
    assert BoardSelector.parse("/dev/ttyUSB0") == BoardSelector(port="/dev/ttyUSB0")
    assert BoardSelector.parse("usb:A5069RR4").resource_id == "usb:A5069RR4"
    assert BoardSelector.parse("mac:24-0A-C4-12-34-56").mac == "24:0a:c4:12:34:56"
    for bad in ("", "usb:", "mac:xyz", "mac:24:0a:c4:12:34"):
        with pytest.raises(BackendError):
            BoardSelector.parse(bad)


def test_normalize_mac() -> None:
    assert normalize_mac("240AC4123456") == "24:0a:c4:12:34:56"
    assert normalize_mac(" 24.0a.c4.12.34.56 ") == "24:0a:c4:12:34:56"


def test_select_by_port() -> None:
    chosen = select_board(BoardSelector(port="/dev/ttyUSB1"), ports=PORTS)
    assert chosen.url == "/dev/ttyUSB1" and chosen.port is PORTS[1] and chosen.resource_id == "/dev/ttyUSB1"
    with pytest.raises(NoMatchingPortError) as err:
        select_board(BoardSelector(port="/dev/ttyUSB9"), ports=PORTS)
    assert err.value.criteria == {"port": "/dev/ttyUSB9"} and "/dev/ttyUSB0" in err.value.candidates


def test_remote_urls_need_no_port_list() -> None:
    chosen = select_board(BoardSelector.parse("rfc2217://rig-3:4000"), ports=[])
    assert chosen.url == "rfc2217://rig-3:4000" and chosen.port is None


def test_select_by_usb_serial_number() -> None:
    chosen = select_board(BoardSelector.parse("usb:A5069RR4"), ports=PORTS)
    assert chosen.url == "/dev/ttyUSB0" and chosen.resource_id == "usb:A5069RR4"
    with pytest.raises(AmbiguousPortError) as err:
        select_board(BoardSelector.parse("usb:0001"), ports=PORTS)
    assert set(err.value.candidates) == {"/dev/ttyUSB1", "/dev/ttyACM0"}
    with pytest.raises(NoMatchingPortError):
        select_board(BoardSelector.parse("usb:nope"), ports=PORTS)


def test_select_by_mac_follows_the_chip_across_ports() -> None:
    chosen = select_board(BoardSelector.parse("mac:30:ae:a4:00:00:01"), ports=PORTS, read_mac=fake_mac_reader)
    assert chosen.url == "/dev/ttyUSB1" and chosen.mac == "30:ae:a4:00:00:01"
    # Re-plugged: the same chip now enumerates on another port.
    MACS["/dev/ttyACM0"], MACS["/dev/ttyUSB1"] = MACS["/dev/ttyUSB1"], MACS["/dev/ttyACM0"]
    try:
        moved = select_board(BoardSelector.parse("mac:30aea4000001"), ports=PORTS, read_mac=fake_mac_reader)
        assert moved.url == "/dev/ttyACM0" and moved.resource_id == chosen.resource_id
    finally:
        MACS["/dev/ttyACM0"], MACS["/dev/ttyUSB1"] = MACS["/dev/ttyUSB1"], MACS["/dev/ttyACM0"]
    with pytest.raises(NoMatchingPortError):
        select_board(BoardSelector.parse("mac:00:00:00:00:00:00"), ports=PORTS, read_mac=fake_mac_reader)


def test_real_port_listing_returns_port_infos() -> None:
    ports = list_serial_ports()
    assert all(isinstance(p, PortInfo) and p.device for p in ports)


REAL_PORT = os.environ.get("CIVICEDGE_HIL_PORT")


@pytest.mark.skipif(not REAL_PORT, reason="no real ESP32 board attached (set CIVICEDGE_HIL_PORT=/dev/ttyUSB0 to run)")
@pytest.mark.timeout(60)
def test_read_mac_from_real_board() -> None:
    assert REAL_PORT is not None
    mac = read_chip_mac(REAL_PORT)
    chosen = select_board(BoardSelector(mac=mac))
    assert chosen.url == REAL_PORT


def test_read_mac_on_missing_port_is_a_clear_error() -> None:
    with pytest.raises(BackendError) as err:
        read_chip_mac("/dev/does-not-exist", attempts=1)
    assert err.value.details["port"] == "/dev/does-not-exist"


def test_explicit_device_node_not_enumerated_is_used(tmp_path: os.PathLike[str]) -> None:
    node = os.path.join(str(tmp_path), "ttyBRIDGE")
    open(node, "w").close()
    chosen = select_board(BoardSelector(port=node), ports=PORTS)
    assert chosen.url == node and chosen.port is None
