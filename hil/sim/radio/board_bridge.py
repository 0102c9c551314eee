"""Wire a simulator ``VirtualBoard`` to a :class:`VirtualPeripheral` over the ``ble`` channel.

The board's MicroPython ``bluetooth`` module (``hil/sim/mpy/bluetooth.py``) sends stack
operations as JSON on channel ``"ble"``; this bridge executes them on a Bumble peripheral
and sends the stack's events back. The message format is documented in ``docs/ble.md``.

Operations are executed strictly in the order the firmware issued them (one worker task),
so fragments of one frame leave in order, as from one NimBLE host.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from hil.sim.errors import SimHostError
from hil.sim.radio.address import board_address
from hil.sim.radio.errors import BridgeProtocolError, RadioError
from hil.sim.radio.peripheral import CharacteristicSpec, DescriptorSpec, ServiceSpec, VirtualPeripheral

logger = logging.getLogger(__name__)

CHANNEL = "ble"


class BoardChannel(Protocol):
    """What the bridge needs from a ``VirtualBoard`` (hil/sim/board.py)."""

    @property
    def device_id(self) -> str:
        """The board id (its BLE address is derived from it)."""
        ...

    def send(self, channel: str, payload: str) -> Any:
        """Deliver ``payload`` to the board's ``_simhw.on(channel, fn)`` handler."""

    def on(self, channel: str, callback: Callable[[str], Any]) -> Any:
        """Call ``callback(payload)`` for every ``_simhw.send(channel, payload)`` on the board."""


@dataclass
class BridgeStats:
    """Counters a test or ``/metrics`` can read."""

    ops: int = 0
    notifications: int = 0
    notify_bytes: int = 0
    bad_messages: int = 0
    errors: int = 0
    connects: int = 0
    disconnects: int = 0
    forced_disconnects: int = 0


def _bytes(msg: dict[str, Any], key: str, payload: str) -> bytes:
    try:
        return binascii.unhexlify(msg.get(key) or "")
    except (binascii.Error, TypeError) as exc:
        raise BridgeProtocolError(f"field {key!r} is not hex", payload=payload, field=key) from exc


def _int(msg: dict[str, Any], key: str, payload: str) -> int:
    value = msg.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BridgeProtocolError(f"field {key!r} must be an integer", payload=payload, field=key)
    return value


def parse_services(msg: dict[str, Any], payload: str) -> list[ServiceSpec]:
    """Turn an ``{"op": "services"}`` message into :class:`ServiceSpec` objects.

    Raises:
        BridgeProtocolError: the structure is not what the board module sends.
    """
    try:
        return [ServiceSpec(str(s["uuid"]), tuple(
            CharacteristicSpec(str(c["uuid"]), int(c["flags"]), int(c["handle"]), tuple(
                DescriptorSpec(str(d["uuid"]), int(d["flags"]), int(d["handle"])) for d in c.get("descs", ())))
            for c in s["chars"])) for s in msg["services"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise BridgeProtocolError(f"malformed services message: {exc}", payload=payload) from exc


@dataclass
class BleBridge:
    """Connects one board's ``ble`` channel to its peripheral on the virtual radio.

    Attributes:
        board: the ``VirtualBoard`` (anything with ``device_id``, ``send`` and ``on``).
        peripheral: the board's :class:`VirtualPeripheral`.
        stats: counters (operations, notifications, bad messages, ...).
    """

    board: BoardChannel
    peripheral: VirtualPeripheral
    stats: BridgeStats = field(default_factory=BridgeStats)
    _queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    _loop: asyncio.AbstractEventLoop | None = None
    _worker: asyncio.Task[None] | None = None
    _opened: asyncio.Event = field(default_factory=asyncio.Event)
    _open_error: BaseException | None = None

    @property
    def address(self) -> str:
        """The board's BLE address on the radio."""
        return self.peripheral.address

    def start(self) -> None:
        """Subscribe to the board's channel and open the peripheral in the background."""
        self._loop = asyncio.get_running_loop()
        self.peripheral.listener = self
        self.board.on(CHANNEL, self._on_board_message)
        self._worker = self._loop.create_task(self._run(), name=f"ble-bridge-{self.board.device_id}")

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait until the peripheral is on the radio.

        Raises:
            RadioError: the radio could not be joined (e.g. relay not running).
        """
        await asyncio.wait_for(self._opened.wait(), timeout_s)
        if self._open_error is not None:
            raise RadioError(f"BLE bridge for {self.board.device_id} failed: {self._open_error}",
                             board=self.board.device_id) from self._open_error

    async def close(self) -> None:
        """Leave the radio (like a board losing power) and stop the worker."""
        if self._worker is not None:
            self._queue.put_nowait(None)
            try:
                # Without a radio, queued operations could only time out one by one.
                await asyncio.wait_for(self._worker, 0.1 if self.peripheral.radio_lost else 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._worker.cancel()
            self._worker = None
        await self.peripheral.close()

    async def disconnect_all(self) -> int:
        """Fault: drop every BLE link of this board now; returns how many were dropped."""
        dropped = await self.peripheral.drop_all()
        self.stats.forced_disconnects += dropped
        return dropped

    # -- board -> radio ------------------------------------------------------------------

    def _on_board_message(self, payload: str) -> None:
        # May be called from the board's reader thread or from the loop itself.
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._queue.put_nowait, payload)

    async def _run(self) -> None:
        try:
            await self.peripheral.open()
            self.board.send(CHANNEL, json.dumps({"ev": "addr", "addr": self._addr_hex()}))
        except BaseException as exc:  # reported through wait_ready(); the board runs on without BLE
            self._open_error = exc
            logger.error("BLE for board %s unavailable: %s", self.board.device_id, exc)
            self._opened.set()
            return
        self._opened.set()
        while (payload := await self._queue.get()) is not None:
            self.stats.ops += 1
            try:
                await self._execute(payload)
            except BridgeProtocolError as exc:
                self.stats.bad_messages += 1
                logger.warning("board %s sent a bad BLE message: %s", self.board.device_id, exc)
            except RadioError as exc:
                self.stats.errors += 1
                logger.info("board %s BLE operation failed: %s", self.board.device_id, exc)
            except Exception as exc:  # the link can vanish mid-operation; the firmware sees a drop
                self.stats.errors += 1
                logger.info("board %s BLE operation failed: %r", self.board.device_id, exc)

    def _addr_hex(self) -> str:
        return self.peripheral.address.replace(":", "").lower()

    async def _execute(self, payload: str) -> None:
        try:
            msg = json.loads(payload)
        except ValueError as exc:
            raise BridgeProtocolError("BLE message is not JSON", payload=payload) from exc
        if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
            raise BridgeProtocolError("BLE message needs an 'op' string", payload=payload)
        op, p = msg["op"], self.peripheral
        if p.radio_lost:
            raise RadioError(f"virtual radio lost; BLE op {op!r} dropped", op=op)
        if op == "hello":
            # A fresh interpreter imported `bluetooth`: tell it its address, reset the radio side.
            self.board.send(CHANNEL, json.dumps({"ev": "addr", "addr": self._addr_hex()}))
            await self._reset()
        elif op == "active":
            if msg.get("on"):
                if isinstance(msg.get("name"), str):
                    p.set_name(msg["name"])
                if isinstance(msg.get("mtu"), int):
                    p.set_preferred_mtu(msg["mtu"])
            else:
                await self._reset()
        elif op == "config":
            if isinstance(msg.get("name"), str):
                p.set_name(msg["name"])
            if "mtu" in msg:
                p.set_preferred_mtu(_int(msg, "mtu", payload))
        elif op == "services":
            p.register_services(parse_services(msg, payload))
        elif op == "adv":
            interval = msg.get("interval_us")
            if interval is None:
                await p.advertise(None)
            else:
                await p.advertise(_int(msg, "interval_us", payload), _bytes(msg, "adv", payload),
                                  _bytes(msg, "resp", payload), bool(msg.get("connectable", True)))
        elif op == "write":
            handle = _int(msg, "handle", payload)
            p.write_local(handle, _bytes(msg, "data", payload))
            if msg.get("update"):
                await self._notify_subscribed(handle)
        elif op == "buffer":
            p.set_buffer(_int(msg, "handle", payload), _int(msg, "len", payload), bool(msg.get("append")))
        elif op == "notify":
            sent = await p.notify(_int(msg, "conn", payload), _int(msg, "handle", payload),
                                  _bytes(msg, "data", payload))
            self.stats.notifications += 1
            self.stats.notify_bytes += sent
        elif op == "indicate":
            await p.indicate(_int(msg, "conn", payload), _int(msg, "handle", payload), _bytes(msg, "data", payload))
        elif op == "disconnect":
            await p.disconnect(_int(msg, "conn", payload))
        else:
            raise BridgeProtocolError(f"unknown BLE op {op!r}", payload=payload, op=op)

    async def _notify_subscribed(self, handle: int) -> None:
        # gatts_write(..., send_update=True): NimBLE notifies only centrals that subscribed.
        attr = self.peripheral._attr(handle)
        await self.peripheral.device.notify_subscribers(attr.attribute, attr.value)

    async def _reset(self) -> None:
        # A new interpreter (boot/soft reset) or active(False): the controller starts clean.
        await self.peripheral.advertise(None)
        await self.peripheral.drop_all()

    # -- radio -> board (PeripheralListener) ----------------------------------------------

    def _event(self, **msg: Any) -> None:
        try:
            self.board.send(CHANNEL, json.dumps(msg))
        except SimHostError as exc:
            # The board's simulator host ended (crashed, killed, shutting down): the radio still
            # reports the link's end (the central disconnects), but there is no board to tell.
            # Raised here, it went up through Bumble's event handler and was logged as an ERROR.
            logger.debug("BLE event %s for %s dropped: %s", msg.get("ev"), self.board.device_id, exc)

    def on_central_connect(self, conn: int, addr_type: int, addr: bytes) -> None:
        """Forward ``_IRQ_CENTRAL_CONNECT``."""
        self.stats.connects += 1
        self._event(ev="connect", conn=conn, addr_type=addr_type, addr=addr.hex())

    def on_central_disconnect(self, conn: int, addr_type: int, addr: bytes) -> None:
        """Forward ``_IRQ_CENTRAL_DISCONNECT``."""
        self.stats.disconnects += 1
        self._event(ev="disconnect", conn=conn, addr_type=addr_type, addr=addr.hex())

    def on_gatts_write(self, conn: int, handle: int, value: bytes) -> None:
        """Forward ``_IRQ_GATTS_WRITE`` with the attribute's new value."""
        self._event(ev="write", conn=conn, handle=handle, value=value.hex())

    def on_mtu_exchanged(self, conn: int, mtu: int) -> None:
        """Forward ``_IRQ_MTU_EXCHANGED``."""
        self._event(ev="mtu", conn=conn, mtu=mtu)

    def on_indicate_done(self, conn: int, handle: int, status: int) -> None:
        """Forward ``_IRQ_GATTS_INDICATE_DONE``."""
        self._event(ev="indicate_done", conn=conn, handle=handle, status=status)


def attach_ble(board: BoardChannel, radio_url: str) -> BleBridge:
    """Give ``board`` a BLE peripheral on the virtual radio at ``radio_url``.

    Must be called from the event loop that runs the board. Returns at once; the peripheral
    joins the radio in the background (``await bridge.wait_ready()`` to wait and see errors).
    The address is :func:`hil.sim.radio.address.board_address` of ``board.device_id``.

    Raises:
        RadioUrlError: ``radio_url`` is malformed.
    """
    from hil.sim.radio.url import parse_radio_url

    url = parse_radio_url(radio_url).url
    peripheral = VirtualPeripheral(url, board_address(board.device_id), name=board.device_id)
    bridge = BleBridge(board, peripheral)
    bridge.start()
    return bridge


async def attach_ble_ready(board: BoardChannel, radio_url: str, timeout_s: float = 10.0) -> BleBridge:
    """:func:`attach_ble`, then wait until the peripheral is on the radio."""
    bridge = attach_ble(board, radio_url)
    await bridge.wait_ready(timeout_s)
    return bridge
