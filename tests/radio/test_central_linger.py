"""The shared central stays joined ``linger_s`` after its last user, on a real relay.

Was (soak QA): the central left the radio as its last user released it, so every scan of a process
with no open link joined the radio again (a WebSocket, a Bumble ``Device``/``Host``, a power-on) and
left it: ~59 joins a minute at 1 s scans, with their reference cycles piling up between full gc passes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import warnings
from collections.abc import Callable

import pytest
from bleak import BleakScanner
from bleak.exc import BleakError

from hil.sim.radio.bleak_backend import make_backends
from hil.sim.radio.central import shared_central
from hil.sim.radio.relay import RadioHandle, start_relay

pytestmark = pytest.mark.timeout(60)


def joins(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.name == "hil.sim.radio.central" and " joined " in r.getMessage())


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture(autouse=True)
def central_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hil.sim.radio.central")


async def test_scans_within_the_linger_reuse_one_join_and_leave_radio_leaves_at_once(
        radio: RadioHandle, caplog: pytest.LogCaptureFixture) -> None:
    scanner_cls, _ = make_backends(radio.url, linger_s=30)
    for _ in range(5):
        await BleakScanner.discover(timeout=0.05, backend=scanner_cls)
    assert joins(caplog) == 1
    assert radio.room_size() == 1  # still joined, unused
    await scanner_cls.leave_radio()
    await until(lambda: radio.room_size() == 0)
    await BleakScanner.discover(timeout=0.05, backend=scanner_cls)  # and joins again when used
    assert joins(caplog) == 2


async def test_the_central_leaves_after_the_linger_and_the_next_scan_joins_again(
        radio: RadioHandle, caplog: pytest.LogCaptureFixture) -> None:
    scanner_cls, _ = make_backends(radio.url, linger_s=0.3)
    await BleakScanner.discover(timeout=0.05, backend=scanner_cls)
    assert radio.room_size() == 1
    await until(lambda: radio.room_size() == 0)
    await BleakScanner.discover(timeout=0.05, backend=scanner_cls)
    assert joins(caplog) == 2


async def test_no_linger_leaves_at_the_last_release(radio: RadioHandle, caplog: pytest.LogCaptureFixture) -> None:
    scanner_cls, _ = make_backends(radio.url, linger_s=0)
    for _ in range(3):
        await BleakScanner.discover(timeout=0.05, backend=scanner_cls)
        await until(lambda: radio.room_size() == 0)  # the relay sees the close a moment later
    assert joins(caplog) == 3


async def test_a_relay_restarted_while_the_central_lingers_is_joined_again_not_reused_dead(
        caplog: pytest.LogCaptureFixture) -> None:
    relay = start_relay()
    port = relay.port
    try:
        scanner_cls, _ = make_backends(relay.url, linger_s=30)
        central = shared_central(relay.url)
        await BleakScanner.discover(timeout=0.05, backend=scanner_cls)
        await relay.aclose()
        # a scan while the relay is down: no adapter (not the lingering device's dead transport)
        with pytest.raises(BleakError):
            await BleakScanner.discover(timeout=0.05, backend=scanner_cls)
        assert central.generation == 1
        relay = start_relay(port=port)
        await BleakScanner.discover(timeout=0.05, backend=scanner_cls)
        assert joins(caplog) == 2 and relay.room_size() == 1 and central.generation == 1
    finally:
        await relay.aclose()


def test_a_lingering_central_leaves_at_the_event_loop_shutdown(radio: RadioHandle) -> None:
    """``asyncio.run`` ends with the central lingering: it leaves, nothing is left running or unclosed."""
    threads = set(threading.enumerate())
    scanner_cls, _ = make_backends(radio.url, linger_s=30)
    errors: list[dict[str, object]] = []

    async def scan() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        await BleakScanner.discover(timeout=0.05, backend=scanner_cls)
        assert radio.room_size() == 1

    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(scan())
        gc.collect()  # a pending task or an unclosed transport would report itself now
    assert time.monotonic() - started < 5  # the close is not a timeout
    deadline = time.monotonic() + 5
    while radio.room_size() and time.monotonic() < deadline:  # the relay sees the close a moment later
        time.sleep(0.02)
    assert radio.room_size() == 0
    assert errors == [] and [str(w.message) for w in caught] == []
    assert set(threading.enumerate()) <= threads
