"""The board bridge never dies on bad channel messages: they are counted, later ones still work."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from bleak import BleakScanner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.sim.radio.bleak_backend import make_backends
from hil.sim.radio.board_bridge import BleBridge, attach_ble_ready
from hil.sim.radio.relay import RadioHandle

pytestmark = pytest.mark.timeout(90)
FULL = os.environ.get("CIVICEDGE_FULL") == "1"


class ChannelOnly:
    """Just the channel API of a board (device_id, send, on): the bridge's only contact with it."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.sent: list[dict[str, Any]] = []
        self.handler: Callable[[str], Any] | None = None

    def send(self, channel: str, payload: str) -> None:
        self.sent.append(json.loads(payload))

    def on(self, channel: str, callback: Callable[[str], Any]) -> None:
        self.handler = callback

    def emit(self, payload: str) -> None:
        assert self.handler is not None
        self.handler(payload)


BAD = [
    "not json", "[]", "{}", '{"op": 5}', '{"op": "nope"}', '{"op": "adv", "interval_us": "fast"}',
    '{"op": "adv", "interval_us": 100000, "adv": "zz"}', '{"op": "notify", "conn": 1, "handle": 14}',
    '{"op": "services", "services": [{"uuid": "not-a-uuid", "chars": []}]}', '{"op": "services"}',
    '{"op": "write", "handle": 999, "data": "00"}', '{"op": "buffer", "handle": 14, "len": -1}',
    '{"op": "config", "mtu": 5}', '{"op": "disconnect", "conn": 42}',
]


async def drain(bridge: BleBridge, ops: int) -> None:
    async with asyncio.timeout(10):
        while bridge.stats.ops < ops:
            await asyncio.sleep(0.01)


async def test_bad_messages_are_counted_and_the_bridge_keeps_working(radio: RadioHandle) -> None:
    board = ChannelOnly("sl-robust-1")
    bridge = await attach_ble_ready(board, radio.url)
    try:
        for payload in BAD:
            board.emit(payload)
        await drain(bridge, len(BAD))
        assert bridge.stats.bad_messages + bridge.stats.errors == len(BAD)
        name = b"sl-robust-1"
        board.emit(json.dumps({"op": "adv", "interval_us": 100000, "adv": (bytes([len(name) + 1, 9]) + name).hex(),
                               "resp": "", "connectable": True}))
        scanner_cls, _ = make_backends(radio.url)
        device = await BleakScanner.find_device_by_name("sl-robust-1", timeout=5, backend=scanner_cls)
        assert device is not None and device.address == bridge.address
    finally:
        await bridge.close()


@settings(max_examples=300 if FULL else 40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=80),
                 st.dictionaries(st.sampled_from(["op", "conn", "handle", "data", "interval_us", "mtu", "name"]),
                                 st.one_of(st.none(), st.integers(-2**31, 2**31), st.text(max_size=12),
                                           st.sampled_from(["adv", "notify", "write", "config", "services"])),
                                 max_size=5).map(json.dumps)))
def test_fuzzed_messages_never_kill_the_bridge(radio: RadioHandle, payload: str) -> None:
    async def run() -> None:
        board = ChannelOnly("sl-fuzz-1")
        bridge = await attach_ble_ready(board, radio.url)
        try:
            board.emit(payload)
            board.emit('{"op": "config", "name": "alive"}')
            await drain(bridge, 2)
            assert bridge.peripheral.name == "alive"
        finally:
            await bridge.close()

    asyncio.run(run())
