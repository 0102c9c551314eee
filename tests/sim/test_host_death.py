"""A Node simulator host that dies: requests fail at once instead of waiting for an answer that never
comes, and a host killed while starting is reported with its exit status at once (not after 30 s)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from hil.sim.errors import SimHostError
from hil.sim.host import SimHost

pytestmark = pytest.mark.timeout(60)


async def test_a_request_to_a_killed_host_fails_at_once() -> None:
    """Its output closes before its exit status is collected: a ping sent then waited 60 s."""
    host = SimHost(speed=1.0)
    await host.start()
    try:
        assert host.running
        assert host.proc is not None
        os.kill(host.proc.pid, signal.SIGKILL)
        await asyncio.wait_for(host.closed.wait(), 10)
        assert not host.running
        t = time.monotonic()
        with pytest.raises(SimHostError, match="simulator host is not running"):
            await host.request({"op": "ping"}, timeout_s=20)
        assert time.monotonic() - t < 1
    finally:
        await host.close()


async def test_a_host_killed_while_starting_says_so_at_once() -> None:
    host = SimHost(speed=1.0)
    starting = asyncio.ensure_future(host.start())
    while host.proc is None:  # the process exists; its first message (hello) has not come yet
        await asyncio.sleep(0.001)
    pid = host.proc.pid
    os.kill(pid, signal.SIGKILL)
    t = time.monotonic()
    with pytest.raises(SimHostError) as info:
        await asyncio.wait_for(starting, 25)
    assert time.monotonic() - t < 10  # not the 30 s wait for a hello
    assert str(info.value) == (f"simulator host (pid {pid}) exited while starting, status -9 (killed by SIGKILL) "
                               "(its stderr, if any, is logged above)")
    assert host.proc is None  # closed
