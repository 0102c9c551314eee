"""Many peripherals on one radio: scanning sees all, connections pick the right one."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from bleak import BleakClient, BleakScanner

from hil.sim.radio.address import board_address
from hil.sim.radio.bleak_backend import make_backends
from hil.sim.radio.peripheral import FLAG_READ, CharacteristicSpec, ServiceSpec, VirtualPeripheral
from hil.sim.radio.relay import RadioHandle
from tests.radio.conftest import SERVICE, TX

pytestmark = pytest.mark.timeout(120)
COUNT = 60 if os.environ.get("CIVICEDGE_FULL") == "1" else 20


async def test_fleet_scan_and_connect(radio: RadioHandle) -> None:
    peripherals = [VirtualPeripheral(radio.url, board_address(f"sl-{i:03d}"), name=f"sl-{i:03d}")
                   for i in range(COUNT)]
    adv = bytes([2, 1, 6, 17, 7]) + uuid.UUID(SERVICE).bytes[::-1]
    try:
        await asyncio.gather(*(p.open() for p in peripherals))
        for i, p in enumerate(peripherals):
            p.register_services([ServiceSpec(SERVICE, (CharacteristicSpec(TX, FLAG_READ, 14),))])
            p.write_local(14, f"value-{i}".encode())
            name = p.name.encode()
            await p.advertise(250_000, adv, bytes([len(name) + 1, 9]) + name)
        assert radio.room_size() == COUNT
        scanner_cls, client_cls = make_backends(radio.url)
        names: set[str] = set()
        async with BleakScanner(service_uuids=[SERVICE], backend=scanner_cls) as scanner:
            async with asyncio.timeout(10):
                async for _device, data in scanner.advertisement_data():
                    names.add(data.local_name or "")
                    if len(names) == COUNT:
                        break
        assert names == {p.name for p in peripherals}
        picks = [3, COUNT - 1]
        clients = [BleakClient(peripherals[i].address, backend=client_cls, timeout=5) for i in picks]
        await asyncio.gather(*(c.connect() for c in clients))
        values = await asyncio.gather(*(c.read_gatt_char(TX) for c in clients))
        assert values == [bytearray(f"value-{i}".encode()) for i in picks]
        assert all(not p.is_advertising for i, p in enumerate(peripherals) if i in picks)
        await asyncio.gather(*(c.disconnect() for c in clients))
    finally:
        await asyncio.gather(*(p.close() for p in peripherals))
