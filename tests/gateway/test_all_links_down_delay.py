"""``all_links_down`` (critical: monitors page on it) only once every link has been down for
ALL_LINKS_DOWN_AFTER_S without a break; brief outages are the links' own warnings.

Was: critical at the first look that found every link down: at every start with BLE as the only link
(its link_state is 0 until the first scan ends), at every BLE restart, and the moment a single USB
port re-enumerated."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import make_env

from gateway.config import load_config
from gateway.health import CRITICAL, WARNING, overall
from gateway.service import ALL_LINKS_DOWN_AFTER_S, Gateway

pytestmark = pytest.mark.timeout(60)


class Clock:
    """The gateway's monotonic clock for the delay, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0  # moved by whole seconds: exact in floating point

    def __call__(self) -> float:
        return self.now


class Radio:
    """The BLE link as the gateway sees it: its link_state and, when the radio cannot be reached, ``problem``."""

    name = "ble"

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.problem: str | None = None

    async def run(self, sink: Any) -> None:
        self.gw.metrics.set_link("ble", False)  # as BleTransport.run: down until its first scan ends
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass


async def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < end, what
        await asyncio.sleep(0.05)


def _codes(gw: Gateway) -> list[str]:
    return [p.code for p in gw.health()]


async def test_every_port_down_is_critical_only_after_the_delay_and_a_port_back_resets_it(tmp_path: Path) -> None:
    ports = [tmp_path / "ttyUSB1", tmp_path / "ttyUSB2"]  # symlinks to a pty, made later: plugged in
    clock = Clock()
    gw = Gateway(load_config(make_env(tmp_path, serial=tuple(map(str, ports)))), health_monotonic=clock)
    await gw.start()
    master, slave = os.openpty()
    try:
        await _until(lambda: len(gw.health()) == 2, "both ports are reported down")
        assert _codes(gw) == ["link_down", "link_down"]  # found down now: warnings only
        clock.now += ALL_LINKS_DOWN_AFTER_S - 1
        assert _codes(gw) == ["link_down", "link_down"] and overall(gw.health()) == WARNING
        clock.now += 1
        problems = gw.health()
        assert [(p.code, p.subject) for p in problems] == [
            ("all_links_down", None), ("link_down", "serial:%s" % ports[0]), ("link_down", "serial:%s" % ports[1])]
        assert overall(problems) == CRITICAL

        ports[1].symlink_to(os.ttyname(slave))  # one port back: the outage is over
        await _until(lambda: len(gw.health()) == 1, "the port is back")
        assert _codes(gw) == ["link_down"]
        os.unlink(ports[1])  # unplugged again: a new outage, timed from now
        os.close(slave)
        os.close(master)
        master = slave = -1
        await _until(lambda: len(gw.health()) == 2, "both ports are down again")
        assert _codes(gw) == ["link_down", "link_down"]
        clock.now += ALL_LINKS_DOWN_AFTER_S
        assert _codes(gw)[0] == "all_links_down"
    finally:
        await gw.stop()
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)


async def test_ble_scanning_or_up_beside_a_down_port_is_no_outage_of_every_link(tmp_path: Path) -> None:
    clock = Clock()
    gw = Gateway(load_config(make_env(tmp_path, serial=(str(tmp_path / "ttyUSB1"),))), health_monotonic=clock)
    radio = Radio(gw)
    gw.transports.append(radio)  # type: ignore[arg-type]
    await gw.start()
    try:
        await _until(lambda: len(gw.health()) == 1, "the port is reported down")
        # BLE's first scan runs (link_state 0, no problem): not reported down, so not counted down
        assert gw.metrics.value("civicedge_link_state", {"link": "ble"}) == 0
        clock.now += 10 * ALL_LINKS_DOWN_AFTER_S
        assert _codes(gw) == ["link_down"]
        gw.metrics.set_link("ble", True)  # the scan found the radio: BLE is up
        clock.now += 10 * ALL_LINKS_DOWN_AFTER_S
        assert _codes(gw) == ["link_down"]
        gw.metrics.set_link("ble", False)
        radio.problem = "cannot reach the BLE radio/adapter (no adapter)"  # reported ble_down: counted
        assert _codes(gw) == ["link_down", "ble_down"]
        clock.now += ALL_LINKS_DOWN_AFTER_S
        assert _codes(gw) == ["all_links_down", "link_down", "ble_down"]
    finally:
        await gw.stop()


async def test_no_link_configured_is_never_every_link_down(tmp_path: Path) -> None:
    clock = Clock()
    gw = Gateway(load_config(make_env(tmp_path)), health_monotonic=clock)
    await gw.start()
    try:
        assert gw.transports == []
        assert gw.health() == []
        clock.now += 10 * ALL_LINKS_DOWN_AFTER_S
        assert gw.health() == []
    finally:
        await gw.stop()
