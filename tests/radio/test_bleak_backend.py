"""bleak's public API against peripherals in other processes, over the virtual radio."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from hil.sim.radio.bleak_backend import make_backends
from hil.sim.radio.relay import RadioHandle
from tests.radio.conftest import RX, SERVICE, TX, PeripheralProcess

pytestmark = pytest.mark.timeout(60)


async def find(scanner_cls: type, name: str, timeout: float = 5.0) -> tuple[BLEDevice, AdvertisementData]:
    async with BleakScanner(service_uuids=[SERVICE], backend=scanner_cls) as scanner:
        async with asyncio.timeout(timeout):
            async for device, adv in scanner.advertisement_data():
                if adv.local_name == name:
                    return device, adv
    raise AssertionError("unreachable")


async def test_rooms_are_isolated(radio: RadioHandle, spawn_peripheral: Callable[..., PeripheralProcess]) -> None:
    spawn_peripheral("sl-room-a", url=radio.room_url("other"))
    scanner_cls, _ = make_backends(radio.url)
    assert await BleakScanner.discover(timeout=1.0, backend=scanner_cls) == []
    other_cls, _ = make_backends(radio.room_url("other"))
    assert [d.name for d in await BleakScanner.discover(timeout=1.0, backend=other_cls)] == ["sl-room-a"]


async def test_power_loss_is_reported_as_disconnect(
        radio: RadioHandle, spawn_peripheral: Callable[..., PeripheralProcess]) -> None:
    board = spawn_peripheral("sl-loss-1")
    scanner_cls, client_cls = make_backends(radio.url)
    device, _ = await find(scanner_cls, "sl-loss-1")
    lost = asyncio.Event()
    client = BleakClient(device, backend=client_cls, disconnected_callback=lambda _c: lost.set())
    await client.connect()
    board.kill()
    await asyncio.wait_for(lost.wait(), 5)
    assert not client.is_connected
    with pytest.raises(BleakError):
        await client.read_gatt_char(TX)
    await client.disconnect()  # harmless after loss


async def test_forced_disconnect_fault_then_reconnect(
        radio: RadioHandle, spawn_peripheral: Callable[..., PeripheralProcess]) -> None:
    spawn_peripheral("sl-drop-1")
    scanner_cls, client_cls = make_backends(radio.url)
    device, _ = await find(scanner_cls, "sl-drop-1")
    lost = asyncio.Event()
    client = BleakClient(device, backend=client_cls, disconnected_callback=lambda _c: lost.set())
    await client.connect()
    await client.write_gatt_char(RX, b"drop", response=False)
    await asyncio.wait_for(lost.wait(), 5)
    assert not client.is_connected
    # The peripheral advertises again; the same client object reconnects.
    await client.connect()
    assert await client.read_gatt_char(TX) == bytearray(b"hello sl-drop-1")
    lost.clear()
    await client.disconnect()
    await asyncio.sleep(0.2)
    assert not lost.is_set(), "an explicit disconnect must not call the disconnected callback"


async def test_connect_timeout_is_timeout_error(radio: RadioHandle) -> None:
    _, client_cls = make_backends(radio.url)
    client = BleakClient("C0:11:22:33:44:55", backend=client_cls, timeout=0.5)
    with pytest.raises(TimeoutError):
        await client.connect()
    assert not client.is_connected


async def test_two_peripherals_connected_at_once(
        radio: RadioHandle, spawn_peripheral: Callable[..., PeripheralProcess]) -> None:
    boards = [spawn_peripheral("sl-pair-a"), spawn_peripheral("sl-pair-b")]
    _, client_cls = make_backends(radio.url)
    clients = [BleakClient(b.address, backend=client_cls, timeout=5) for b in boards]
    await asyncio.gather(*(c.connect() for c in clients))
    values = await asyncio.gather(*(c.read_gatt_char(TX) for c in clients))
    assert values == [bytearray(b"hello sl-pair-a"), bytearray(b"hello sl-pair-b")]
    await asyncio.gather(*(c.disconnect() for c in clients))


async def test_radio_loss_is_reported_as_disconnect(
        radio: RadioHandle, spawn_peripheral: Callable[..., PeripheralProcess]) -> None:
    board = spawn_peripheral("sl-radio-1")
    _, client_cls = make_backends(radio.url)
    lost = asyncio.Event()
    client = BleakClient(board.address, backend=client_cls, timeout=5,
                         disconnected_callback=lambda _c: lost.set())
    await client.connect()
    await radio.aclose()
    await asyncio.wait_for(lost.wait(), 5)
    assert not client.is_connected
    await client.disconnect()  # harmless after the loss; waits until the central has left
