"""bleak's public API against one peripheral process shared by the module (non-destructive tests)."""

from __future__ import annotations

import asyncio

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
        shared_radio: RadioHandle, shared_board: PeripheralProcess) -> None:
    board = shared_board
    scanner_cls, _ = make_backends(shared_radio.url)
    device, adv = await find(scanner_cls, "sl-shared-1")
    assert device.address == board.address
    assert SERVICE in adv.service_uuids
    assert -80 < adv.rssi <= -40
    assert device.name == "sl-shared-1"


async def test_service_filter_excludes_other_services(
        shared_radio: RadioHandle, shared_board: PeripheralProcess) -> None:
    scanner_cls, _ = make_backends(shared_radio.url)
    devices = await BleakScanner.discover(timeout=1.0, service_uuids=["0000180f-0000-1000-8000-00805f9b34fb"],
                                          backend=scanner_cls)
    assert devices == []
    devices = await BleakScanner.discover(timeout=1.0, service_uuids=[SERVICE], backend=scanner_cls)
    assert [d.name for d in devices] == ["sl-shared-1"]


@pytest.mark.parametrize("mtu", [23, 247])
async def test_connect_read_write_notify_at_mtu(
        shared_radio: RadioHandle, shared_board: PeripheralProcess, mtu: int) -> None:
    scanner_cls, client_cls = make_backends(shared_radio.url)
    device, _ = await find(scanner_cls, "sl-shared-1")
    async with BleakClient(device, backend=client_cls, mtu=mtu) as client:
        assert client.is_connected
        assert client.name == "sl-shared-1"
        assert client.mtu_size == mtu
        tx = client.services.get_characteristic(TX)
        assert tx is not None and {"read", "notify"} <= set(tx.properties)
        assert tx.max_write_without_response_size == mtu - 3
        rx = client.services.get_characteristic(RX)
        assert rx is not None and {"write", "write-without-response"} <= set(rx.properties)
        assert await client.read_gatt_char(TX) == bytearray(b"hello sl-shared-1")

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


async def test_connect_by_address_string(shared_radio: RadioHandle, shared_board: PeripheralProcess) -> None:
    board = shared_board
    _, client_cls = make_backends(shared_radio.url)
    async with BleakClient(board.address, backend=client_cls, timeout=5) as client:
        assert await client.read_gatt_char(TX) == bytearray(b"hello sl-shared-1")


async def test_pair_before_connect_encrypts_the_link(
        shared_radio: RadioHandle, shared_board: PeripheralProcess) -> None:
    board = shared_board
    _, client_cls = make_backends(shared_radio.url)
    async with BleakClient(board.address, backend=client_cls, timeout=5, pair=True) as client:
        assert client._backend._connection.is_encrypted  # type: ignore[attr-defined]
        assert await client.read_gatt_char(TX) == bytearray(b"hello sl-shared-1")
        with pytest.raises(BleakError):
            await client.unpair()


async def test_passive_scan_gets_no_scan_response(
        shared_radio: RadioHandle, shared_board: PeripheralProcess) -> None:
    board = shared_board
    scanner_cls, _ = make_backends(shared_radio.url)
    found = await BleakScanner.discover(timeout=1.0, scanning_mode="passive", backend=scanner_cls,
                                        return_adv=True)
    _device, adv = found[board.address]
    assert SERVICE in adv.service_uuids
    assert adv.local_name is None  # the name is only in the scan response (as the firmware sends it)


async def test_connect_works_after_a_timed_out_attempt_on_the_same_adapter(
        shared_radio: RadioHandle, shared_board: PeripheralProcess) -> None:
    board = shared_board
    scanner_cls, client_cls = make_backends(shared_radio.url)
    # A running scanner keeps the shared central (one controller) alive across both attempts:
    # the timed-out attempt must really be cancelled in the controller.
    async with BleakScanner(backend=scanner_cls):
        with pytest.raises(TimeoutError):
            await BleakClient("C0:11:22:33:44:66", backend=client_cls, timeout=0.5).connect()
        async with BleakClient(board.address, backend=client_cls, timeout=5) as client:
            assert await client.read_gatt_char(TX) == bytearray(b"hello sl-shared-1")


async def test_relay_survives_garbage_and_rejects_bad_rooms(
        shared_radio: RadioHandle, shared_board: PeripheralProcess) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    board = shared_board
    async with connect(shared_radio.url) as ws:
        await ws.send(b"\x01\xff")           # truncated HCI command
        await ws.send(b"\x77garbage-bytes")  # unknown packet type
        await ws.send(b"")
    base = shared_radio.url.rsplit("/", 1)[0]
    with pytest.raises(ConnectionClosed):
        async with connect(base + "/bad%20room") as ws:
            await ws.recv()
    _, client_cls = make_backends(shared_radio.url)
    async with BleakClient(board.address, backend=client_cls, timeout=5) as client:
        assert await client.read_gatt_char(TX) == bytearray(b"hello sl-shared-1")

