"""The gateway's scans on the virtual radio re-use one join of the radio instead of one per scan.

Was (soak QA): with BLE on and no board holding a link, each scan was the shared central's only user,
so each scan joined the radio (a new WebSocket transport and a new Bumble ``Device``/``Host``, powered
on) and its stop left it again: ~59 joins a minute at 1 s scans. Those objects form reference cycles,
freed only by the collector's full passes, so the gateway's RSS had a ~3 MB sawtooth and CPU was
spent on joins. The central now lingers after its last user (``make_backends(..., linger_s=)``), as an
adapter stays powered on between scans, and the stopping transport leaves the radio at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from bumble.device import Device

from gateway.config.model import BleConfig
from gateway.transports.ble_link import BleTransport
from hil.sim.radio.central import AdvertisementListener, shared_central
from hil.sim.radio.errors import RadioConnectError

pytestmark = pytest.mark.timeout(60)

SCANS = 12


def central_hosts() -> int:
    """Live Bumble devices of this process's central (the relay's thread has none of this name)."""
    # type(), not isinstance(): the heap holds weak proxies, and a dead one raises on any attribute
    return sum(1 for o in gc.get_objects() if issubclass(type(o), Device) and o.name == "civicedge-central")


async def test_scans_reuse_one_radio_join_and_a_stop_leaves_the_radio(
        radio: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hil.sim.radio.central")
    ble = BleTransport(BleConfig(enabled=True, backend="virtual", radio=radio, scan_interval_s=0.05))
    central = shared_central(radio)
    starts = 0
    add_scanner = central.add_scanner

    async def counting(token: object, listener: AdvertisementListener, active: bool) -> None:
        nonlocal starts
        starts += 1
        await add_scanner(token, listener, active)

    central.add_scanner = counting  # type: ignore[method-assign]  # counts the real scan starts
    gc.collect()
    before = central_hosts()
    task = asyncio.create_task(ble.run(lambda _item, _link: None))
    gc.disable()  # dead hosts stay countable: without a full pass their cycles are never freed
    try:
        async with asyncio.timeout(40):
            while starts < SCANS:
                assert not task.done(), task
                await asyncio.sleep(0.02)
        assert ble.problem is None
        hosts = central_hosts() - before
    finally:
        gc.enable()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    joins = [r for r in caplog.records if r.name == "hil.sim.radio.central" and "joined" in r.getMessage()]
    # one join serves every scan (was: one per scan, and as many hosts alive until a full gc pass)
    assert (len(joins), hosts) == (1, 1), "%d joins, %d Bumble hosts alive after %d scans" % (
        len(joins), hosts, starts)
    assert central.generation == 0
    # the stopped transport left the radio: nothing of it is open or running (the gateway's exit
    # warns about tasks still running after its stop)
    with pytest.raises(RadioConnectError):
        central.device  # noqa: B018 - the property raises once the central has left
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()] == []
