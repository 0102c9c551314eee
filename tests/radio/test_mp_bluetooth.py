"""The MicroPython `bluetooth` module (real interpreter) through the bridge, radio and bleak."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice

from hil.sim.radio.address import board_address
from hil.sim.radio.bleak_backend import make_backends
from hil.sim.radio.board_bridge import BleBridge, attach_ble_ready
from hil.sim.radio.relay import RadioHandle
from tests.radio.conftest import RX, SERVICE, TX
from tests.radio.mpboard import ChannelBoard

pytestmark = pytest.mark.timeout(90)
ECHO = Path(__file__).with_name("echo_peripheral.py")


@pytest.fixture
async def echo_board(radio: RadioHandle) -> AsyncIterator[tuple[ChannelBoard, BleBridge]]:
    board = ChannelBoard("mp-echo-1")
    bridge: BleBridge | None = None
    try:
        await board.start()
        bridge = await attach_ble_ready(board, radio.url)  # before the program, as at boot
        await board.exec(ECHO.read_text())
        await board.expect("advertising")
        yield board, bridge
    finally:
        if bridge is not None:
            await bridge.close()
        await board.stop()


async def find_echo(radio: RadioHandle) -> BLEDevice:
    scanner_cls, _ = make_backends(radio.url)
    device = await BleakScanner.find_device_by_name("mp-echo-1", timeout=5, backend=scanner_cls)
    assert device is not None
    return device


async def test_mac_matches_host_derivation(echo_board: tuple[ChannelBoard, BleBridge],
                                           radio: RadioHandle) -> None:
    board, bridge = echo_board
    await board.exec("print('mac', ble.config('mac')[1].hex())")
    line = await board.expect("mac ")
    assert bridge.address == board_address("mp-echo-1")
    device = await find_echo(radio)
    assert device.address == bridge.address
    # Without /identity.json the module picks its own address; the host's "addr" event wins.
    assert line.split()[1] == bridge.address.replace(":", "").lower()


@pytest.mark.parametrize("mtu", [23, 247])
async def test_firmware_peripheral_through_bleak(echo_board: tuple[ChannelBoard, BleBridge],
                                                 radio: RadioHandle, mtu: int) -> None:
    board, bridge = echo_board
    device = await find_echo(radio)
    _, client_cls = make_backends(radio.url)
    async with BleakClient(device, backend=client_cls, mtu=mtu) as client:
        assert (await board.expect("connect")).split()[2] == "1"  # random address type
        if mtu > 23:
            assert await board.expect("mtu") == f"mtu 1 {mtu}"
        assert SERVICE in [s.uuid for s in client.services]
        assert await client.read_gatt_char(TX) == bytearray(b"ready")
        got: asyncio.Queue[bytes] = asyncio.Queue()
        await client.start_notify(TX, lambda _c, d: got.put_nowait(bytes(d)))
        await client.write_gatt_char(RX, b"ping", response=True)
        assert await board.expect("write") == "write True 4"
        assert await asyncio.wait_for(got.get(), 5) == b"ping"
        # gatts_write set the local value: a read returns it.
        assert await client.read_gatt_char(TX) == bytearray(b"ping")
        await client.write_gatt_char(RX, b"long", response=False)
        assert await asyncio.wait_for(got.get(), 5) == bytes(mtu - 3)
    assert await board.expect("disconnect") == "disconnect 1"
    assert bridge.stats.notifications == 2 and bridge.stats.bad_messages == 0


async def test_remote_write_truncated_to_default_buffer(echo_board: tuple[ChannelBoard, BleBridge],
                                                        radio: RadioHandle) -> None:
    board, _ = echo_board
    await board.exec("ble.gatts_set_buffer(RX, 20)")
    device = await find_echo(radio)
    _, client_cls = make_backends(radio.url)
    async with BleakClient(device, backend=client_cls, mtu=247) as client:
        await client.write_gatt_char(RX, bytes(range(100)), response=True)
        assert await board.expect("write") == "write True 20"


async def test_firmware_gap_disconnect_reaches_bleak(echo_board: tuple[ChannelBoard, BleBridge],
                                                     radio: RadioHandle) -> None:
    board, _ = echo_board
    device = await find_echo(radio)
    _, client_cls = make_backends(radio.url)
    lost = asyncio.Event()
    client = BleakClient(device, backend=client_cls, disconnected_callback=lambda _c: lost.set())
    await client.connect()
    await client.write_gatt_char(RX, b"bye", response=False)
    assert await board.expect("gap_disconnect") == "gap_disconnect True"
    await asyncio.wait_for(lost.wait(), 5)
    # The program re-advertises on disconnect: reconnect works.
    device = await find_echo(radio)
    async with BleakClient(device, backend=client_cls) as again:
        assert again.is_connected


async def test_bridge_disconnect_fault(echo_board: tuple[ChannelBoard, BleBridge], radio: RadioHandle) -> None:
    board, bridge = echo_board
    device = await find_echo(radio)
    _, client_cls = make_backends(radio.url)
    lost = asyncio.Event()
    client = BleakClient(device, backend=client_cls, disconnected_callback=lambda _c: lost.set())
    await client.connect()
    assert await bridge.disconnect_all() == 1
    await asyncio.wait_for(lost.wait(), 5)
    assert await board.expect("disconnect") == "disconnect 1"
    assert bridge.stats.forced_disconnects == 1


async def test_power_loss_drops_link(echo_board: tuple[ChannelBoard, BleBridge], radio: RadioHandle) -> None:
    _, bridge = echo_board
    device = await find_echo(radio)
    _, client_cls = make_backends(radio.url)
    lost = asyncio.Event()
    client = BleakClient(device, backend=client_cls, disconnected_callback=lambda _c: lost.set())
    await client.connect()
    await bridge.close()
    await asyncio.wait_for(lost.wait(), 5)
    assert not client.is_connected


async def test_radio_loss_reaches_firmware(echo_board: tuple[ChannelBoard, BleBridge], radio: RadioHandle) -> None:
    board, _ = echo_board
    device = await find_echo(radio)
    _, client_cls = make_backends(radio.url)
    client = BleakClient(device, backend=client_cls)
    await client.connect()
    assert (await board.expect("connect")).startswith("connect 1")
    await radio.aclose()
    assert await board.expect("disconnect") == "disconnect 1"
    assert not client.is_connected


async def test_fresh_interpreter_resets_the_radio_side(echo_board: tuple[ChannelBoard, BleBridge],
                                                       radio: RadioHandle) -> None:
    board, bridge = echo_board
    device = await find_echo(radio)
    _, client_cls = make_backends(radio.url)
    lost = asyncio.Event()
    client = BleakClient(device, backend=client_cls, disconnected_callback=lambda _c: lost.set())
    await client.connect()
    # A soft reset imports `bluetooth` again in a new interpreter: it says hello.
    await board.exec("import sys\nsys.modules.pop('bluetooth')\nimport bluetooth")
    await asyncio.wait_for(lost.wait(), 5)
    assert not bridge.peripheral.is_advertising
    assert bridge.peripheral.connections == {}


async def test_indication_descriptor_and_send_update(radio: RadioHandle) -> None:
    board = ChannelBoard("mp-extra-1")
    bridge: BleBridge | None = None
    try:
        await board.start()
        bridge = await attach_ble_ready(board, radio.url)
        await board.exec(Path(__file__).with_name("extras_peripheral.py").read_text())
        await board.expect("advertising")
        scanner_cls, client_cls = make_backends(radio.url)
        device = await BleakScanner.find_device_by_name("mp-extra-1", timeout=5, backend=scanner_cls)
        assert device is not None
        async with BleakClient(device, backend=client_cls) as client:
            await board.expect("connect")
            ind = client.services.get_characteristic("6c3e00f1-4a5e-4c1b-9b9e-0c1c1ce0ed9e")
            upd = client.services.get_characteristic("6c3e00f2-4a5e-4c1b-9b9e-0c1c1ce0ed9e")
            assert ind is not None and upd is not None and ind.properties == ["indicate"]
            user_desc = upd.get_descriptor("00002901-0000-1000-8000-00805f9b34fb")
            assert user_desc is not None
            assert await client.read_gatt_descriptor(user_desc) == bytearray(b"update counter")
            got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
            await client.start_notify(ind, lambda _c, d: got.put_nowait(("ind", bytes(d))))
            await board.exec("ble.gatts_indicate(conn, IND, b'confirm me')")
            assert await asyncio.wait_for(got.get(), 5) == ("ind", b"confirm me")
            assert await board.expect("indicate_done") == "indicate_done 1 True 0"
            # send_update notifies subscribed centrals only: first unsubscribed (nothing), then subscribed.
            await board.exec("ble.gatts_write(UPD, b'v1', True)")
            await asyncio.sleep(0.3)
            assert got.empty()
            await client.start_notify(upd, lambda _c, d: got.put_nowait(("upd", bytes(d))))
            await board.exec("ble.gatts_write(UPD, b'v2', True)")
            assert await asyncio.wait_for(got.get(), 5) == ("upd", b"v2")
            assert await client.read_gatt_char(upd) == bytearray(b"v2")
    finally:
        if bridge is not None:
            await bridge.close()
        await board.stop()
