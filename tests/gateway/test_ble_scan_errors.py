"""What a failed BLE scan is: the radio stack's failures are retried, anything else is a defect.

Was (review of d623792): ``except Exception`` around the scan took a defect of the code (a
TypeError, an AttributeError) for "cannot reach the BLE radio/adapter", retried it for ever and
showed its traceback only at -vv; and every failure was worded as an unreachable radio, also a
scan that bleak reported failed on a radio that answered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import BleakBluetoothNotAvailableError, BleakBluetoothNotAvailableReason, BleakError
from helpers import first_problem

from gateway.config.model import BleConfig
from gateway.transports import ble_link
from gateway.transports.ble_link import BleTransport

pytestmark = pytest.mark.timeout(30)


def scanner_raising(error: BaseException | None) -> type[BaseBleakScanner]:
    """A bleak scanner backend whose start raises ``error`` (None: it never answers)."""

    class Scanner(BaseBleakScanner):
        def __init__(self, detection_callback: Any, service_uuids: Any, scanning_mode: str = "active",
                     **kwargs: Any) -> None:
            super().__init__(detection_callback, service_uuids)

        async def start(self) -> None:
            if error is None:
                await asyncio.Event().wait()
            else:
                raise error

        async def stop(self) -> None:
            pass

    return Scanner


def transport(error: BaseException | None) -> BleTransport:
    config = BleConfig(enabled=True, scan_interval_s=0.05)
    return BleTransport(config, backends=(scanner_raising(error), object))


@pytest.mark.parametrize("defect", [TypeError("discover() got an unexpected keyword argument 'x'"),
                                    AttributeError("'NoneType' object has no attribute 'address'")])
async def test_a_defect_ends_the_run_for_the_supervisor(defect: Exception, caplog: pytest.LogCaptureFixture) -> None:
    ble = transport(defect)
    with caplog.at_level(logging.DEBUG, logger="gateway.transports.ble_link"):
        with pytest.raises(type(defect)):
            await asyncio.wait_for(ble.run(lambda _item, _link: None), 2.0)
    assert "cannot reach" not in caplog.text
    assert ble.problem is None


async def test_no_adapter_is_an_unreachable_radio(caplog: pytest.LogCaptureFixture) -> None:
    error = BleakBluetoothNotAvailableError("the virtual radio at ws://x did not answer",
                                            BleakBluetoothNotAvailableReason.NO_BLUETOOTH)
    with caplog.at_level(logging.WARNING, logger="gateway.transports.ble_link"):
        problem = await first_problem(transport(error))
    assert problem == "cannot reach the BLE radio/adapter (the virtual radio at ws://x did not answer)"
    [record] = caplog.records  # warned once (the retries within 60 s at DEBUG)
    assert record.levelno == logging.WARNING and record.getMessage().startswith("BLE: " + problem)
    assert record.exc_info is None


async def test_a_timeout_is_an_unreachable_radio() -> None:
    assert await first_problem(transport(TimeoutError())) == "cannot reach the BLE radio/adapter (TimeoutError)"


async def test_a_scan_that_never_returns_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ble_link, "SCAN_GRACE_S", 0.1)
    problem = await first_problem(transport(None))
    assert problem == "cannot reach the BLE radio/adapter (the scan did not return within 0.15 s)"


@pytest.mark.parametrize(("error", "problem"), [
    (BleakError("org.bluez.Error.InProgress"), "BLE scan failed (BleakError: org.bluez.Error.InProgress)"),
    (PermissionError(1, "Operation not permitted"), "BLE scan failed (PermissionError: [Errno 1] Operation not "
                                                    "permitted)"),
])
async def test_other_scan_failures_are_not_called_unreachable(error: Exception, problem: str) -> None:
    assert await first_problem(transport(error)) == problem
