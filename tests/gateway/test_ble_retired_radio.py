"""BLE and a retired device (virtual radio, real Bumble stack, real gateway service): its open link is
closed and it is not connected while retired, so the gateway that serves the board now can have it;
reinstated, it is served again."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from conftest import make_env
from test_ble_transport import BleDevice, ble_section, stored

from gateway.config import load_config
from gateway.service import Gateway
from gateway.transports.ble_link import LINK_CHECK_S, BleTransport

pytestmark = pytest.mark.timeout(240)
# As test_ble_slots_radio: a first frame late on a loaded machine is dropped at the auth timeout and served
# again after the reconnect delay.
STORED_WITHIN_S = 45.0


async def wait_stored(db: Path, device: str, seqs: list[int], timeout: float) -> None:
    start = time.monotonic()
    while stored(db, device) != seqs:
        assert time.monotonic() - start < timeout, "stored %s: %r" % (device, stored(db, device))
        await asyncio.sleep(0.1)


async def test_an_open_link_of_a_retired_device_is_closed_and_it_is_served_again_once_reinstated(
        tmp_path: Path, radio: str, caplog: pytest.LogCaptureFixture) -> None:
    real = BleDevice(radio, "bin-1", send=(1, 2))
    gw = Gateway(load_config(make_env(tmp_path, extra=ble_section(radio, 4))))
    ble = BleTransport(gw.config.ble, metrics=gw.metrics, registry=gw.registry, auth_timeout_s=2.0)
    gw.transports = [t for t in gw.transports if t.name != "ble"] + [ble]
    caplog.set_level(logging.WARNING, logger="gateway.transports.ble_link")
    await gw.start()
    try:
        await wait_stored(gw.config.storage.path, "bin-1", [1, 2], STORED_WITHIN_S)
        assert ble.connected == 1
        gw.registry.retire("bin-1")
        retired = time.monotonic()
        await asyncio.to_thread(real.wait, lambda e: e["event"] == "disconnect", LINK_CHECK_S + 10)
        assert time.monotonic() - retired < LINK_CHECK_S + 2.0
        assert gw.metrics.value("civicedge_ble_deauthorized_total", {"reason": "retired"}) == 1
        assert gw.metrics.value("civicedge_ble_deauthorized_total", {"reason": "revoked"}) == 0
        [line] = [r.getMessage() for r in caplog.records if "BLE closed the link" in r.getMessage()]
        assert "device bin-1 is retired" in line and "devices reinstate" in line
        real.command("send 3 4")
        await asyncio.sleep(4 * gw.config.ble.scan_interval_s + 2)
        assert sum(1 for e in real.events if e["event"] == "connect") == 1, real.events  # no slot while retired
        assert stored(gw.config.storage.path, "bin-1") == [1, 2]

        gw.registry.reinstate("bin-1")
        await wait_stored(gw.config.storage.path, "bin-1", [1, 2, 3, 4], 2 * STORED_WITHIN_S)
    finally:
        await gw.stop()
        real.close()
