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


async def test_scan_by_service_uuid_reports_name_uuid_rssi(
        radio: RadioHandle, spawn_peripheral: Callable[..., PeripheralProcess]) -> None:
    board = spawn_peripheral("sl-scan-1")
    scanner_cls, _ = make_backends(radio.url)
    device, adv = await find(scanner_cls, "sl-scan-1")
    assert device.address == board.address
    assert SERVICE in adv.service_uuids
    assert -80 < adv.rssi <= -40
    assert device.name == "sl-scan-1"


async def test_service_filter_excludes_other_services(
        radio: RadioHandle, spawn_peripheral: Callable[..., PeripheralProcess]) -> None:
    spawn_peripheral("sl-filter-1")
    scanner_cls, _ = make_backends(radio.url)
    devices = await BleakScanner.discover(timeout=1.0, service_uuids=["0000180f-0000-1000-8000-00805f9b34fb"],
                                          backend=scanner_cls)
    assert devices == []
    devices = await BleakScanner.discover(timeout=1.0, service_uuids=[SERVICE], backend=scanner_cls)
    assert [d.name for d in devices] == ["sl-filter-1"]


async def test_rooms_are_isolated(radio: RadioHandle, spawn_peripheral: Callable[..., PeripheralProcess]) -> None:
    spawn_peripheral("sl-room-a", url=radio.room_url("other"))
    scanner_cls, _ = make_backends(radio.url)
    assert await BleakScanner.discover(timeout=1.0, backend=scanner_cls) == []
    other_cls, _ = make_backends(radio.room_url("other"))
    assert [d.name for d in await BleakScanner.discover(timeout=1.0, backend=other_cls)] == ["sl-room-a"]


@pytest.mark.parametrize("mtu", [23, 247])
async def test_connect_read_write_notify_at_mtu(
        radio: RadioHandle, spawn_peripheral: Callable[..., PeripheralProcess], mtu: int) -> None:
    spawn_peripheral("sl-io-1")
    scanner_cls, client_cls = make_backends(radio.url)
    device, _ = await find(scanner_cls, "sl-io-1")
    async with BleakClient(device, backend=client_cls, mtu=mtu) as client:
        assert client.is_connected
        assert client.name == "sl-io-1"
        assert client.mtu_size == mtu
        tx = client.services.get_characteristic(TX)
        assert tx is not None and {"read", "notify"} <= set(tx.properties)
        assert tx.max_write_without_response_size == mtu - 3
        rx = client.services.get_characteristic(RX)
        assert rx is not None and {"write", "write-without-response"} <= set(rx.properties)
        assert await client.read_gatt_char(TX) == bytearray(b"hello sl-io-1")

        received: asyncio.Queue[bytes] = asyncio.Queue()
        await client.start_notify(TX, lambda _c, data: received.put_nowait(bytes(data)))
        payload = bytes(range(mtu - 3))
        await client.write_gatt_char(RX, payload, response=True)
        assert await asyncio.wait_for(received.get(), 5) == payload
        await client.write_gatt_char(RX, b"no-response", response=False)
        assert await asyncio.wait_for(received.get(), 5) == b"no-response"
        # Longer notifications are cut to ATT_MTU - 3, as an ESP32 does.
        await client.write_gatt_char(RX, b"burst:5:300", response=True)
        got = [await asyncio.wait_for(received.get(), 5) for _ in range(5)]
        assert got == [bytes([i]) * (mtu - 3) for i in range(5)]
        await client.stop_notify(TX)
        await client.write_gatt_char(RX, b"after-stop", response=True)
        await asyncio.sleep(0.3)
        assert received.empty()
    assert not client.is_connected


async def test_connect_by_address_string(radio: RadioHandle,
                                         spawn_peripheral: Callable[..., PeripheralProcess]) -> None:
    board = spawn_peripheral("sl-addr-1")
    _, client_cls = make_backends(radio.url)
    async with BleakClient(board.address, backend=client_cls, timeout=5) as client:
        assert await client.read_gatt_char(TX) == bytearray(b"hello sl-addr-1")


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


async def test_pair_before_connect_encrypts_the_link(
        radio: RadioHandle, spawn_peripheral: Callable[..., PeripheralProcess]) -> None:
    board = spawn_peripheral("sl-pair-1")
    _, client_cls = make_backends(radio.url)
    async with BleakClient(board.address, backend=client_cls, timeout=5, pair=True) as client:
        assert client._backend._connection.is_encrypted  # type: ignore[attr-defined]
        assert await client.read_gatt_char(TX) == bytearray(b"hello sl-pair-1")
        with pytest.raises(BleakError):
            await client.unpair()


async def test_passive_scan_gets_no_scan_response(
        radio: RadioHandle, spawn_peripheral: Callable[..., PeripheralProcess]) -> None:
    board = spawn_peripheral("sl-passive-1")
    scanner_cls, _ = make_backends(radio.url)
    found = await BleakScanner.discover(timeout=1.0, scanning_mode="passive", backend=scanner_cls,
                                        return_adv=True)
    _device, adv = found[board.address]
    assert SERVICE in adv.service_uuids
    assert adv.local_name is None  # the name is only in the scan response (as the firmware sends it)


async def test_connect_works_after_a_timed_out_attempt_on_the_same_adapter(
        radio: RadioHandle, spawn_peripheral: Callable[..., PeripheralProcess]) -> None:
    board = spawn_peripheral("sl-retry-1")
    scanner_cls, client_cls = make_backends(radio.url)
    # A running scanner keeps the shared central (one controller) alive across both attempts:
    # the timed-out attempt must really be cancelled in the controller.
    async with BleakScanner(backend=scanner_cls):
        with pytest.raises(TimeoutError):
            await BleakClient("C0:11:22:33:44:66", backend=client_cls, timeout=0.5).connect()
        async with BleakClient(board.address, backend=client_cls, timeout=5) as client:
            assert await client.read_gatt_char(TX) == bytearray(b"hello sl-retry-1")


async def test_relay_survives_garbage_and_rejects_bad_rooms(
        radio: RadioHandle, spawn_peripheral: Callable[..., PeripheralProcess]) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    board = spawn_peripheral("sl-garbage-1")
    async with connect(radio.url) as ws:
        await ws.send(b"\x01\xff")           # truncated HCI command
        await ws.send(b"\x77garbage-bytes")  # unknown packet type
        await ws.send(b"")
    base = radio.url.rsplit("/", 1)[0]
    with pytest.raises(ConnectionClosed):
        async with connect(base + "/bad%20room") as ws:
            await ws.recv()
    _, client_cls = make_backends(radio.url)
    async with BleakClient(board.address, backend=client_cls, timeout=5) as client:
        assert await client.read_gatt_char(TX) == bytearray(b"hello sl-garbage-1")
