"""Join the radio as a Bumble host: one transport + one device, with radio loss handled.

Shared by the peripheral and the central. If the relay goes away (stopped, crashed), every
link of the device is reported as dropped with "connection timeout", so bleak clients get
their disconnected callback and firmware gets ``_IRQ_CENTRAL_DISCONNECT`` instead of waiting
forever on a link that no longer exists.

Three of Bumble's log lines are expected on the virtual radio and are logged at DEBUG instead of
their own level (shown with ``civicedge -vvv``; docs/ble.md §2):

* ``bumble.transport.common`` "exception while waiting for packet" / "... sending packet" with a
  traceback (ERROR) when the relay closes the WebSocket: the radio loss is reported by its users
  (the central at INFO, dropped links at WARNING, the gateway's BLE link at WARNING).
* ``bumble.gatt_client`` "!!! received notification with no subscriber" (WARNING): a board
  notifies as soon as a central connects (NimBLE does not check the CCCD, and the firmware does not
  wait for it), while the central subscribes only after the MTU exchange and service discovery;
  the stack drops those early notifications, as on a real host, and the board sends them again.
* ``bumble.host`` "!!! Exception while sending command:" with a traceback (ERROR), when the
  exception is Bumble's ``TransportLostError``: the relay went away while an HCI command (a scan's
  start or stop, a connect) waited for its answer. Bumble fails that command with this error and
  logs it before re-raising it; the caller gets it (the bleak backend as
  ``BleakBluetoothNotAvailableError``, the gateway logs the lost radio at WARNING), so the
  record only repeats, as an ERROR, what is reported already. Any other exception there
  (a malformed packet, a defect) stays an ERROR.
* ``bumble.transport.common`` "!!! Exception in on_packet" with a traceback (ERROR) when the exception
  is ``asyncio.InvalidStateError`` from ``Host.on_command_processed``: an HCI command's answer came
  after the command had given up (its wait timed out or was cancelled while the relay restarted), and
  Bumble sets the result of a future already done. The command's failure was reported by its caller;
  the late answer is dropped, as it should be.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bumble import hci
from bumble.device import Device
from bumble.transport import open_transport
from bumble.transport.common import Transport, TransportLostError
from websockets.exceptions import ConnectionClosed, WebSocketException

from hil.sim.radio.errors import RadioConnectError
from hil.sim.radio.url import parse_radio_url

logger = logging.getLogger(__name__)


class _DemoteToDebug(logging.Filter):
    """Turns a matching record into a DEBUG one, emitted only where its logger has DEBUG on."""

    def __init__(self, match: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__()
        self._match = match

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG or not self._match(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _relay_closed(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return (record.msg in ("exception while waiting for packet", "exception while sending packet")
            and isinstance(error, (ConnectionClosed, OSError)))


def _early_notification(record: logging.LogRecord) -> bool:
    return isinstance(record.msg, str) and record.msg.startswith("!!! received notification with no subscriber")


def _command_lost_with_relay(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    # The message is coloured (ANSI escapes around it): matched on its words.
    return (isinstance(record.msg, str) and "!!! Exception while sending command" in record.msg
            and isinstance(error, TransportLostError))


def _late_command_answer(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    tb = record.exc_info[2] if record.exc_info else None
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    # Only Bumble's own answer handling (the future of a command that gave up), not any InvalidStateError.
    return (isinstance(record.msg, str) and "Exception in on_packet" in record.msg
            and isinstance(error, asyncio.InvalidStateError)
            and tb is not None and tb.tb_frame.f_code.co_name == "on_command_processed")


def _install_log_filters() -> None:
    """Demote Bumble's expected virtual-radio noise to DEBUG (module docstring); idempotent."""
    for name, match in (("bumble.transport.common", lambda r: _relay_closed(r) or _late_command_answer(r)),
                        ("bumble.gatt_client", _early_notification),
                        ("bumble.host", _command_lost_with_relay)):
        target = logging.getLogger(name)
        if not any(isinstance(f, _DemoteToDebug) for f in target.filters):
            target.addFilter(_DemoteToDebug(match))


_install_log_filters()


async def open_radio_device(radio_url: str, *, name: str, address: str,
                            timeout_s: float = 10.0) -> tuple[Transport, Device]:
    """Open a transport to the radio and a Bumble device on it (not yet powered on).

    Raises:
        RadioConnectError: the relay is not reachable within ``timeout_s``.
    """
    spec = parse_radio_url(radio_url).transport_spec
    try:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for raises a connect error that coincides with a
        # cancel instead of the cancel, and a caller that retries on connect errors never ends (gateway run hung).
        async with asyncio.timeout(timeout_s):
            transport = await open_transport(spec)
    except (OSError, asyncio.TimeoutError, WebSocketException) as exc:  # refused, no answer, not a relay
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
