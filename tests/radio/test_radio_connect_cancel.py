"""A cancel that arrives as the connect to the virtual radio fails must end the caller with CancelledError.

Python 3.11's ``asyncio.wait_for`` raised the connect error instead, so a caller that retries on connect
errors (the gateway's BLE transport) never ended: ``gateway run`` with ``[ble]`` hung at its stop."""

from __future__ import annotations

import asyncio

import pytest

from hil.sim.radio.errors import RadioError
from hil.sim.radio.hostlink import open_radio_device

pytestmark = [pytest.mark.timeout(60)]


async def _cancelled_after(yields: int) -> str:
    task = asyncio.create_task(open_radio_device("ws://127.0.0.1:1", name="probe", address="F0:00:00:00:00:01",
                                                 timeout_s=5.0))
    for _ in range(yields):
        await asyncio.sleep(0)
    if task.done():  # refused before the cancel: its error is the right answer
        return "done before the cancel"
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    except RadioError as exc:
        return "connect error: %s" % exc
    return "opened"


async def test_a_cancel_during_a_refused_connect_is_never_lost() -> None:
    outcomes = [await _cancelled_after(n) for n in range(24)]
    assert outcomes[0] == "cancelled"
    lost = [n for n, outcome in enumerate(outcomes) if outcome not in ("cancelled", "done before the cancel")]
    assert not lost, list(enumerate(outcomes))
