"""A running gateway follows its ``[sim_clock] follow_file``: the time in its ACKs (the boards' time
sync) moves when the simulation rewrites the file, without a restart."""

from __future__ import annotations

import asyncio
import os
import select
import time
from pathlib import Path

import pytest
from conftest import KEYS, make_env
from helpers import report_frame, write_clock
from procs import PtyDevice

from gateway.config import load_config
from gateway.config.sim_clock import CHECK_EVERY_S
from gateway.protocol import FRAME_ACK, SerialDeframer, decode_body, parse_frame, verify_tag
from gateway.service import Gateway

pytestmark = pytest.mark.timeout(60)


def _ack_time(dev: PtyDevice, deframer: SerialDeframer, device: str, seq: int, timeout: float = 15.0) -> int:
    """Read the device's end of the pty until the ACK of ``seq``; its time-sync ``t`` (unix s)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not select.select([dev.master], [], [], 0.05)[0]:
            continue
        try:
            data = os.read(dev.master, 4096)
        except (BlockingIOError, OSError):
            continue
        for item in deframer.feed(data):
            assert isinstance(item, bytes), item
            frame = parse_frame(item)
            assert frame.type == FRAME_ACK and verify_tag(frame, KEYS[frame.device_id])
            if frame.device_id == device and frame.seq >= seq:
                return int(decode_body(frame.body)["t"])
    raise AssertionError(f"no ACK for {device} seq {seq}")


async def test_a_running_gateway_follows_the_rewritten_file(tmp_path: Path) -> None:
    dev = PtyDevice(KEYS)
    clock_file = tmp_path / "sim-clock.json"
    first = time.time() + 3 * 86400  # the simulation runs days ahead of the wall clock
    write_clock(clock_file, first)
    cfg = make_env(tmp_path, serial=(dev.path,), extra='[sim_clock]\nfollow_file = "sim-clock.json"\n')
    gw = Gateway(load_config(cfg))
    await gw.start()
    deframer = SerialDeframer()
    try:
        end = time.monotonic() + 10
        while gw.metrics.value("civicedge_link_state", {"link": "serial:%s" % dev.path}) != 1:
            assert time.monotonic() < end, "the serial link did not come up"
            await asyncio.sleep(0.05)
        dev.send([report_frame("bin-1", 1, KEYS["bin-1"])])
        t1 = await asyncio.to_thread(_ack_time, dev, deframer, "bin-1", 1)
        assert int(first) <= t1 < first + 30, (t1, first)
        # The simulation moves on a day (as if its boards ran faster): the gateway reads it at its next look.
        second = first + 86400
        write_clock(clock_file, second)
        await asyncio.sleep(CHECK_EVERY_S + 0.1)
        dev.send([report_frame("bin-1", 2, KEYS["bin-1"])])
        t2 = await asyncio.to_thread(_ack_time, dev, deframer, "bin-1", 2)
        assert int(second) <= t2 < second + 30, (t2, second)
        assert second <= gw.clock() < second + 30
    finally:
        await gw.stop()
        dev.close()
