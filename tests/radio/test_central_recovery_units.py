"""The shared central and the scanner backend when a command times out or a scan start is cancelled.

No relay: the central's Bumble device is a stand-in, so each case is exact.

Was (review of d623792): an HCI command that timed out gave up whichever device was current, also
one joined again meanwhile (after the device the command went to was lost) by another user; and a
cancel during ``VirtualBleakScanner.start()`` kept the central's reference and the scanner entry
(only Bumble's errors stopped the scan), so the central never left the radio.

The central lingers after its last release (an adapter stays powered on between scans): a radio lost
meanwhile must not be re-used dead, also when the next scan comes before the loop ran the callback of
the transport's end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bleak.exc import BleakBluetoothNotAvailableError, BleakError
from bumble import core
from bumble.transport.common import TransportLostError

from hil.sim.radio import central as central_mod
from hil.sim.radio.bleak_backend import make_backends
from hil.sim.radio.central import SharedCentral
from hil.sim.radio.errors import RadioConnectError

pytestmark = pytest.mark.timeout(30)
URL = "ws://127.0.0.1:9/units"


class FakeSource:
    def __init__(self) -> None:
        self.terminated: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class FakeTransport:
    def __init__(self) -> None:
        self.source = FakeSource()
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class FakeDevice:
    """A Bumble device stand-in: ``start_scanning`` does what ``starting`` says."""

    def __init__(self, starting: Any = None) -> None:
        self.is_scanning = False
        self.starting = starting

    async def start_scanning(self, active: bool, filter_duplicates: bool) -> None:
        if isinstance(self.starting, asyncio.Event):
            await self.starting.wait()
        elif isinstance(self.starting, BaseException):
            raise self.starting
        self.is_scanning = True

    async def stop_scanning(self) -> None:
        self.is_scanning = False


def joined(central: SharedCentral, device: FakeDevice) -> FakeTransport:
    """Give ``central`` a device as if it had joined the radio (what acquire() does on first use)."""
    transport = FakeTransport()
    central._transport, central._device = transport, device  # type: ignore[assignment]
    return transport


@pytest.fixture
async def central() -> AsyncIterator[SharedCentral]:
    loop = asyncio.get_running_loop()
    shared = central_mod._centrals.setdefault(loop, {})[URL] = SharedCentral(URL)
    yield shared
    central_mod._centrals.get(loop, {}).pop(URL, None)


async def test_a_timed_out_command_gives_up_only_the_device_it_went_to(central: SharedCentral) -> None:
    old = joined(central, FakeDevice())
    before = central.generation  # read before the command, as the backend does
    central._lost(old, "the relay closed the connection")  # type: ignore[arg-type]  # lost meanwhile...
    new_device = FakeDevice()
    new = joined(central, new_device)  # ...and joined again by another user
    central.invalidate("connecting: HCI command timed out", generation=before)
    assert id(central._device) == id(new_device) and id(central._transport) == id(new)  # the new device is kept
    assert central.generation == before + 1
    # the command that timed out on the current device gives it up
    central.invalidate("starting a scan: HCI command timed out", generation=central.generation)
    assert central._device is None and central.generation == before + 2
    await asyncio.sleep(0.05)
    assert new.closed


async def test_a_command_timeout_is_a_radio_not_available(central: SharedCentral) -> None:
    joined(central, FakeDevice(starting=core.CommandTimeoutError()))
    central._users = 1  # another user holds the radio: only giving the device up drops it
    scanner_cls, _ = make_backends(URL)
    with pytest.raises(BleakBluetoothNotAvailableError):
        await scanner_cls(None, None).start()
    assert central._device is None and central.generation == 1  # given up: the next scan joins again
    assert central._users == 1 and central._scanners == {}


async def test_a_lost_relay_during_a_scan_start_is_a_radio_not_available(central: SharedCentral) -> None:
    joined(central, FakeDevice(starting=TransportLostError("transport lost")))
    scanner_cls, _ = make_backends(URL)
    with pytest.raises(BleakBluetoothNotAvailableError):
        await scanner_cls(None, None).start()
    assert central._users == 0 and central._scanners == {}


async def test_another_command_failure_is_a_plain_bleak_error(central: SharedCentral) -> None:
    joined(central, FakeDevice(starting=core.InvalidStateError("already scanning")))
    central._users = 1
    scanner_cls, _ = make_backends(URL)
    with pytest.raises(BleakError) as caught:
        await scanner_cls(None, None).start()
    assert not isinstance(caught.value, BleakBluetoothNotAvailableError)
    assert central._device is not None and central.generation == 0  # the radio answered: kept
    assert central._users == 1 and central._scanners == {}


async def test_a_cancel_during_scan_start_gives_back_the_reference_and_the_scanner_entry(
        central: SharedCentral) -> None:
    starting = asyncio.Event()  # never set: start_scanning waits until cancelled
    joined(central, FakeDevice(starting=starting))
    central._users = 1  # another user holds the radio, so the central stays joined
    scanner_cls, _ = make_backends(URL)
    scanner = scanner_cls(None, None)
    task = asyncio.create_task(scanner.start())
    for _ in range(100):
        if central._scanners:
            break
        await asyncio.sleep(0.01)
    assert central._users == 2 and list(central._scanners) == [scanner]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert central._users == 1 and central._scanners == {}
    assert getattr(scanner, "_central") is None


async def test_an_acquire_within_the_linger_keeps_the_device_and_the_linger_ends_it_after(
        central: SharedCentral) -> None:
    device = FakeDevice()
    transport = joined(central, device)
    central._users = 1
    await central.release(linger_s=0.2)
    await central.acquire()  # the next scan, within the linger: no join (the fake URL has no relay)
    await asyncio.sleep(0.3)
    assert id(central._device) == id(device) and not transport.closed and central._users == 1
    await central.release(linger_s=0.05)
    for _ in range(100):
        if transport.closed:
            break
        await asyncio.sleep(0.01)
    assert transport.closed and central._device is None and central.generation == 0


@pytest.mark.parametrize("callback_ran", [True, False])
async def test_a_radio_lost_while_the_central_lingers_is_not_reused(
        central: SharedCentral, callback_ran: bool) -> None:
    transport = joined(central, FakeDevice())
    transport.source.terminated.add_done_callback(central._on_terminated(transport))  # type: ignore[arg-type]
    central._users = 1
    await central.release(linger_s=30)
    assert central._device is not None and not transport.closed  # lingering
    transport.source.terminated.set_result(None)  # the relay closed the connection
    if callback_ran:
        await asyncio.sleep(0)
    # the next scan joins again (and fails here: no relay) rather than using the dead device
    with pytest.raises(RadioConnectError):
        await central.acquire(timeout_s=1.0)
    assert central.generation == 1 and central._device is None and central._users == 0
    await asyncio.sleep(0.05)
    assert transport.closed


async def test_leave_if_idle_waits_for_the_close_the_linger_started(central: SharedCentral) -> None:
    """Review of bb09afc: once the linger had begun closing, leave_if_idle() saw no transport and returned
    while the close still ran, so a stopping gateway left the linger's tasks behind."""
    closing = asyncio.Event()
    finish = asyncio.Event()

    class SlowTransport(FakeTransport):
        async def close(self) -> None:
            closing.set()
            await finish.wait()
            self.closed = True

    transport = SlowTransport()
    central._transport, central._device = transport, FakeDevice()  # type: ignore[assignment]
    central._users = 1
    await central.release(linger_s=0.01)
    await asyncio.wait_for(closing.wait(), 5)  # the linger's own leave is closing the connection
    leaving = asyncio.create_task(central.leave_if_idle())
    await asyncio.sleep(0.05)
    assert not leaving.done()  # waits for that close
    finish.set()
    await asyncio.wait_for(leaving, 5)
    assert transport.closed and central._linger is None
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("radio-central-linger")]


async def test_make_backends_does_not_linger_unless_asked_and_the_gateway_asks() -> None:
    """Review of bb09afc: a 30 s default kept the central (and its loop) alive on loops closed without
    cancelling their tasks; only the gateway's transport, which leaves the radio at close, lingers."""
    from gateway.config.model import BleConfig
    from gateway.transports.ble_link import resolve_backends
    from hil.sim.radio.bleak_backend import DEFAULT_LINGER_S, make_backends

    scanner, client = make_backends(URL)
    assert scanner.linger_s == 0 and client.linger_s == 0
    gw_scanner, gw_client = resolve_backends(BleConfig(enabled=True, backend="virtual", radio=URL))
    assert gw_scanner.linger_s == gw_client.linger_s == DEFAULT_LINGER_S > 0
