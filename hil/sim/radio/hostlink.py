"""Join the radio as a Bumble host: one transport + one device, with radio loss handled.

Shared by the peripheral and the central. If the relay goes away (stopped, crashed), every
link of the device is reported as dropped with "connection timeout", so bleak clients get
their disconnected callback and firmware gets ``_IRQ_CENTRAL_DISCONNECT`` instead of waiting
forever on a link that no longer exists.
"""

from __future__ import annotations

import asyncio
import logging

from bumble import hci
from bumble.device import Device
from bumble.transport import open_transport
from bumble.transport.common import Transport

from hil.sim.radio.errors import RadioConnectError
from hil.sim.radio.url import parse_radio_url

logger = logging.getLogger(__name__)


async def open_radio_device(radio_url: str, *, name: str, address: str,
                            timeout_s: float = 10.0) -> tuple[Transport, Device]:
    """Open a transport to the radio and a Bumble device on it (not yet powered on).

    Raises:
        RadioConnectError: the relay is not reachable within ``timeout_s``.
    """
    spec = parse_radio_url(radio_url).transport_spec
    try:
        transport = await asyncio.wait_for(open_transport(spec), timeout_s)
    except (OSError, asyncio.TimeoutError) as exc:
        raise RadioConnectError(f"cannot reach the virtual radio at {radio_url}: {exc}",
                                url=radio_url) from exc
    device = Device.with_hci(name, hci.Address(address), transport.source, transport.sink)

    def on_radio_lost(future: asyncio.Future[None]) -> None:
        # Retrieve the transport's exception (a closed WebSocket): an unretrieved one is
        # reported from a finalizer at a random later point.
        error = None if future.cancelled() else future.exception()
        if error is not None:
            logger.debug("radio transport of %s ended: %r", address, error)
        handles = list(device.connections)
        if handles:
            logger.warning("virtual radio %s lost: dropping %d link(s) of %s", radio_url, len(handles), address)
        for handle in handles:
            device.on_disconnection(handle, hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR)

    transport.source.terminated.add_done_callback(on_radio_lost)
    return transport, device
