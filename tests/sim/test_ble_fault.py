"""The ``ble_disconnect`` fault drops a central's BLE link to a virtual board (bleak's public API only)."""

from __future__ import annotations

import asyncio

import pytest
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakBluetoothNotAvailableError, BleakError

from hil.sim.radio.bleak_backend import make_backends
from hil.sim.radio.relay import start_relay

pytestmark = pytest.mark.timeout(120)
SERVICE = "6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e"


async def test_ble_disconnect_fault_drops_the_link(make_board):
    radio = start_relay()
    try:
        board = await make_board("bin-esp32c3", install=True, device_id="bin-fault-1", radio_url=radio.url)
        await board.advance(0.5, chunk_s=0.1)   # the firmware starts advertising
        scanner_cls, client_cls = make_backends(radio.url)
        device = None
        for _ in range(10):
            device = await BleakScanner.find_device_by_address(board.ble_address, timeout=1.0, backend=scanner_cls)
            if device is not None:
                break
            await board.advance(0.2, chunk_s=0.1)
        assert device is not None, "the board never advertised"
        lost = asyncio.Event()
        client = BleakClient(device, backend=client_cls, disconnected_callback=lambda _c: lost.set())
        await client.connect()
        assert client.is_connected
        await board.fault("ble_disconnect")
        await asyncio.wait_for(lost.wait(), 10)
        assert not client.is_connected
        assert any(e.get("kind") == "ble_disconnect" for e in board.events)
        await board.stop()
    finally:
        radio.stop()


async def test_drop_ble_refuses_reconnects_for_its_duration(make_board):
    """``drop ble 30s``: the central is thrown off at once, and again each time it reconnects,
    until the 30 virtual seconds are over; then it connects and stays connected."""
    radio = start_relay()
    try:
        board = await make_board("bin-esp32c3", install=True, device_id="bin-fault-2", radio_url=radio.url)
        await board.advance(0.5, chunk_s=0.1)
        scanner_cls, client_cls = make_backends(radio.url)
        device = None
        for _ in range(10):
            device = await BleakScanner.find_device_by_address(board.ble_address, timeout=1.0, backend=scanner_cls)
            if device is not None:
                break
            await board.advance(0.2, chunk_s=0.1)
        assert device is not None, "the board never advertised"

        async def connected_after(wait_s: float) -> bool:
            client = BleakClient(device, backend=client_cls)
            try:
                await client.connect()
            except BleakBluetoothNotAvailableError:
                raise  # the virtual radio lost: not the board refusing
            except (BleakError, TimeoutError):  # thrown off during setup (seen: "MTU exchange ...: disconnected"),
                return False  # or no answer from the board
            await asyncio.sleep(wait_s)
            up = client.is_connected
            await client.disconnect()
            return up

        await board.fault("drop ble 30s")
        await board.advance(1)
        assert not await connected_after(1.0)          # reconnect during the drop: thrown off
        disconnects = sum(1 for e in board.events if e.get("kind") == "ble_disconnect")
        assert disconnects >= 2                        # the drop itself and the refused reconnect
        await board.advance(30)
        assert await connected_after(1.0)              # after the drop: connects and stays up
        await board.stop()
    finally:
        radio.stop()
