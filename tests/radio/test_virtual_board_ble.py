"""A virtual board (hil.sim.board) running the unchanged firmware, reached through bleak only:
scan by service UUID, connect at MTU 23 and 247, receive its report frames, ACK them."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

import pytest
from bleak import BleakClient, BleakScanner

from gateway.protocol import FRAME_ACK, FRAME_REPORT
from gateway.protocol.ble_fragments import FragmentReassembler, fragment_frame
from gateway.protocol.frame import build_frame, decode_body, parse_frame, verify_tag
from hil.scenarios.outbox import frame_files
from hil.sim.board import VirtualBoard
from hil.sim.radio.address import board_address
from hil.sim.radio.bleak_backend import make_backends
from hil.sim.radio.relay import RadioHandle
from tests.radio.conftest import RX, SERVICE, TX

pytestmark = pytest.mark.timeout(120)
BOARD_ID = "bin-ble-1"


@pytest.fixture
async def bin_board(radio: RadioHandle, tmp_path: object) -> AsyncIterator[VirtualBoard]:
    # Paused clock: the battery bin stays in its awake window while the test talks to it.
    board = VirtualBoard("bin-esp32c3", device_id=BOARD_ID, radio_url=radio.url, speed=None,
                         flash_dir=os.path.join(str(tmp_path), "flash"))
    await board.start()
    try:
        await board.advance(0.5, chunk_s=0.1)
        yield board
    finally:
        await board.stop()


@pytest.mark.parametrize("mtu", [23, 247])
async def test_board_reports_over_ble_and_takes_ack(bin_board: VirtualBoard, radio: RadioHandle, mtu: int) -> None:
    board = bin_board
    assert board.ble_address == board_address(BOARD_ID)
    scanner_cls, client_cls = make_backends(radio.url)
    found = await BleakScanner.discover(timeout=2.0, service_uuids=[SERVICE], backend=scanner_cls, return_adv=True)
    device, adv = found[board.ble_address]
    assert adv.local_name == BOARD_ID
    key = bytes.fromhex(json.loads(board.identity_path.read_text())["key"])

    frames: list[bytes] = []
    reassembler = FragmentReassembler()

    def on_notify(_c: object, data: bytearray) -> None:
        assert len(data) <= mtu - 3
        frames.extend(item for item in reassembler.feed(bytes(data)) if isinstance(item, bytes))

    async with BleakClient(device, backend=client_cls, mtu=mtu) as client:
        assert client.mtu_size == min(mtu, 185)  # the board's preferred MTU (boards/bin-esp32c3.toml)
        await client.start_notify(TX, on_notify)
        for _ in range(100):
            await board.advance(0.05, chunk_s=0.05)
            await asyncio.sleep(0.02)
            if frames:
                await asyncio.sleep(0.3)  # let every fragment of the burst arrive
                break
        assert frames, "no report frame arrived over BLE"
        seqs = []
        for raw in frames:
            parsed = parse_frame(raw)
            assert (parsed.type, parsed.device_id) == (FRAME_REPORT, BOARD_ID)
            assert verify_tag(parsed, key)
            assert decode_body(parsed.body)["k"] == "bin"
            seqs.append(parsed.seq)
        assert seqs == sorted(set(seqs))
        outbox = board.flash_dir / "outbox"
        assert len(frame_files(outbox)) >= len(seqs)
        ack = build_frame(FRAME_ACK, BOARD_ID, max(seqs), {"t": 1_795_320_700}, key)
        for fragment in fragment_frame(ack, client.mtu_size, 1):
            await client.write_gatt_char(RX, fragment, response=False)
        for _ in range(20):
            await asyncio.sleep(0.05)
            await board.advance(0.05, chunk_s=0.05)
            if not frame_files(outbox):
                break
        assert frame_files(outbox) == [], "the ACK did not clear the outbox"
    assert board.ble_bridge.stats.bad_messages == 0


async def test_ble_disconnect_fault_drops_the_central(bin_board: VirtualBoard, radio: RadioHandle) -> None:
    board = bin_board
    _, client_cls = make_backends(radio.url)
    lost = asyncio.Event()
    assert board.ble_address is not None
    client = BleakClient(board.ble_address, backend=client_cls, timeout=5,
                         disconnected_callback=lambda _c: lost.set())
    await client.connect()
    await board.fault("ble_disconnect")
    await asyncio.wait_for(lost.wait(), 5)
    assert not client.is_connected
    assert board.ble_bridge.stats.forced_disconnects == 1
