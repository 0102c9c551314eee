"""A GATT peripheral on the virtual radio, driven by a board's low-level ``bluetooth`` calls.

:class:`VirtualPeripheral` is a Bumble ``Device`` on its own emulated controller. Its methods
mirror what the MicroPython ``bluetooth.BLE`` object asks of the stack (register services,
advertise, notify, indicate, write the local value, disconnect) and it reports what the stack
reports to ``BLE.irq`` (central connect/disconnect, GATT writes, MTU exchanged, indication
confirmed) to a :class:`PeripheralListener`.

Handles: the firmware sees the handles the MicroPython side assigned (see
``hil/sim/mpy/bluetooth.py``); the peripheral maps them to Bumble's ATT attributes, so
firmware code never depends on Bumble's handle layout (nor on NimBLE's: like on a board,
handles are opaque numbers returned by ``gatts_register_services``).

ESP32 behaviour reproduced here (NimBLE host, MicroPython 1.27):

* notification / indication payloads longer than ``ATT_MTU - 3`` are truncated, silently;
* a remote write is truncated to the attribute's buffer size (20 bytes unless
  ``gatts_set_buffer`` raised it); in append mode it is appended up to that size;
* notifications are sent whether or not the central enabled them in its CCCD (NimBLE's
  ``ble_gattc_notify_custom`` does not check), the central's stack drops unwanted ones;
* advertising stops when a central connects.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from bumble import att, gatt, hci
from bumble.core import UUID as BumbleUUID
from bumble.device import AdvertisingType, Connection, Device
from bumble.transport.common import Transport

from hil.sim.radio.errors import PeripheralError, RadioConnectError
from hil.sim.radio.hostlink import open_radio_device

logger = logging.getLogger(__name__)

FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
FLAG_INDICATE = 0x0020

DEFAULT_ATTR_BUFFER = 20  # MP_BLUETOOTH_DEFAULT_ATTR_LEN
DEFAULT_PREFERRED_MTU = 256  # ESP-IDF CONFIG_BT_NIMBLE_ATT_PREFERRED_MTU default
ATT_DEFAULT_MTU = 23
ADDR_TYPE_RANDOM = 1
ADDR_TYPE_PUBLIC = 0


@dataclass(frozen=True)
class DescriptorSpec:
    """One descriptor as the firmware declared it (value handle assigned by the board side)."""

    uuid: str
    flags: int
    handle: int


@dataclass(frozen=True)
class CharacteristicSpec:
    """One characteristic: UUID, ``FLAG_*`` bits, value handle, descriptors."""

    uuid: str
    flags: int
    handle: int
    descriptors: tuple[DescriptorSpec, ...] = ()


@dataclass(frozen=True)
class ServiceSpec:
    """One primary service as passed to ``gatts_register_services``."""

    uuid: str
    characteristics: tuple[CharacteristicSpec, ...]


class PeripheralListener(Protocol):
    """What the stack reports to the firmware (``BLE.irq`` events)."""

    def on_central_connect(self, conn: int, addr_type: int, addr: bytes) -> None:
        """A central connected (``_IRQ_CENTRAL_CONNECT``)."""

    def on_central_disconnect(self, conn: int, addr_type: int, addr: bytes) -> None:
        """A central disconnected (``_IRQ_CENTRAL_DISCONNECT``)."""

    def on_gatts_write(self, conn: int, handle: int, value: bytes) -> None:
        """A central wrote; ``value`` is the attribute's new local value (``_IRQ_GATTS_WRITE``)."""

    def on_mtu_exchanged(self, conn: int, mtu: int) -> None:
        """An ATT MTU exchange completed (``_IRQ_MTU_EXCHANGED``)."""

    def on_indicate_done(self, conn: int, handle: int, status: int) -> None:
        """An indication was confirmed (status 0) or failed (``_IRQ_GATTS_INDICATE_DONE``)."""


@dataclass
class _Attr:
    handle: int
    flags: int
    attribute: Any  # bumble Characteristic or Descriptor
    value: bytes = b""
    buffer_size: int = DEFAULT_ATTR_BUFFER
    append: bool = False


@dataclass
class _Link:
    connection: Connection
    addr_type: int
    addr: bytes
    mtu: int = ATT_DEFAULT_MTU


def _address_bytes(address: hci.Address) -> bytes:
    # Bumble stores addresses little-endian; MicroPython reports them most significant first.
    return bytes(reversed(bytes(address)))


def _bumble_uuid(text: str) -> BumbleUUID:
    try:
        return BumbleUUID(text)
    except (ValueError, TypeError) as exc:
        raise PeripheralError(f"invalid UUID {text!r}", uuid=text) from exc


@dataclass
class VirtualPeripheral:
    """A board's BLE peripheral on the virtual radio.

    Args:
        radio_url: ``ws://HOST:PORT/ROOM`` of a running relay.
        address: the random static address (``AA:BB:..``), e.g. from
            :func:`hil.sim.radio.address.board_address`.
        name: GAP device name (``BLE.config(gap_name=...)``).
        listener: receives the stack's events; may be set later.
    """

    radio_url: str
    address: str
    name: str = "civicedge"
    listener: PeripheralListener | None = None
    preferred_mtu: int = DEFAULT_PREFERRED_MTU
    _transport: Transport | None = None
    _device: Device | None = None
    _attrs: dict[int, _Attr] = field(default_factory=dict)
    _links: dict[int, _Link] = field(default_factory=dict)
    _advertising: bool = False

    @property
    def device(self) -> Device:
        """The Bumble device (after :meth:`open`)."""
        if self._device is None:
            raise PeripheralError("peripheral is not open", address=self.address)
        return self._device

    @property
    def connections(self) -> dict[int, tuple[int, bytes, int]]:
        """Current links: conn handle → (addr_type, address bytes, ATT MTU)."""
        return {h: (link.addr_type, link.addr, link.mtu) for h, link in self._links.items()}

    @property
    def radio_lost(self) -> bool:
        """True once the relay connection has gone (relay stopped or crashed)."""
        transport = self._transport
        return transport is not None and transport.source.terminated.done()

    @property
    def is_advertising(self) -> bool:
        """True while the controller advertises (stops when a central connects)."""
        return self._device is not None and bool(self._device.is_advertising)

    async def open(self, timeout_s: float = 10.0) -> None:
        """Join the radio and power the controller on.

        Raises:
            RadioConnectError: the relay is not reachable.
        """
        transport, device = await open_radio_device(self.radio_url, name=self.name, address=self.address,
                                                    timeout_s=timeout_s)
        self._transport = transport
        device.gatt_server.max_mtu = self.preferred_mtu
        device.on(device.EVENT_CONNECTION, self._on_connection)
        self._device = device
        async with asyncio.timeout(timeout_s):  # not wait_for: it can lose a cancel (hostlink)
            await device.power_on()
        logger.debug("peripheral %s on %s", self.address, self.radio_url)

    async def close(self) -> None:
        """Leave the radio (links drop at the centrals as a supervision timeout)."""
        transport, self._transport, self._device = self._transport, None, None
        self._links.clear()
        if transport is not None:
            await transport.close()

    # -- configuration -------------------------------------------------------------------

    def set_name(self, name: str) -> None:
        """Set the GAP device name (read by centrals from the GAP service)."""
        self.name = name
        if self._device is not None:
            self._device.name = name

    def set_preferred_mtu(self, mtu: int) -> None:
        """Largest ATT MTU accepted in an exchange (``BLE.config(mtu=...)``)."""
        if not ATT_DEFAULT_MTU <= mtu <= 517:
            raise PeripheralError(f"MTU must be 23..517, got {mtu}", mtu=mtu)
        self.preferred_mtu = mtu
        if self._device is not None:
            self._device.gatt_server.max_mtu = mtu

    def register_services(self, services: Sequence[ServiceSpec]) -> None:
        """Replace the GATT database with ``services`` (``gatts_register_services``).

        Raises:
            PeripheralError: a UUID is invalid or a handle is used twice.
        """
        device = self.device
        if self._links:
            raise PeripheralError("cannot register services while a central is connected")
        built: list[gatt.Service] = []
        attrs: dict[int, _Attr] = {}
        for service in services:
            characteristics = []
            for spec in service.characteristics:
                descriptors = []
                for dspec in spec.descriptors:
                    descriptor = gatt.Descriptor(
                        _bumble_uuid(dspec.uuid), self._permissions(dspec.flags),
                        att.AttributeValue(read=self._reader(dspec.handle),
                                            write=self._writer(dspec.handle)))
                    self._add_attr(attrs, _Attr(dspec.handle, dspec.flags, descriptor))
                    descriptors.append(descriptor)
                characteristic = gatt.Characteristic(
                    _bumble_uuid(spec.uuid), gatt.Characteristic.Properties(spec.flags & 0xFF),
                    self._permissions(spec.flags),
                    gatt.CharacteristicValue(read=self._reader(spec.handle),
                                             write=self._writer(spec.handle)),
                    descriptors)
                self._add_attr(attrs, _Attr(spec.handle, spec.flags, characteristic))
                characteristics.append(characteristic)
            built.append(gatt.Service(_bumble_uuid(service.uuid), characteristics))
        # Keep Bumble's GAP and GATT services (as NimBLE does), replace ours.
        server = device.gatt_server
        keep = [s for s in server.services if s.uuid in (gatt.GATT_GENERIC_ACCESS_SERVICE,
                                                          gatt.GATT_GENERIC_ATTRIBUTE_SERVICE)]
        server.services, server.attributes, server.attributes_by_handle = [], [], {}
        for bumble_service in keep + built:
            device.add_service(bumble_service)
        self._attrs = attrs

    @staticmethod
    def _add_attr(attrs: dict[int, _Attr], attr: _Attr) -> None:
        if attr.handle in attrs:
            raise PeripheralError(f"handle {attr.handle} used twice", handle=attr.handle)
        attrs[attr.handle] = attr

    @staticmethod
    def _permissions(flags: int) -> att.Attribute.Permissions:
        perms = att.Attribute.Permissions(0)
        if flags & FLAG_READ:
            perms |= att.Attribute.Permissions.READABLE
        if flags & (FLAG_WRITE | FLAG_WRITE_NO_RESPONSE):
            perms |= att.Attribute.Permissions.WRITEABLE
        return perms

    def _attr(self, handle: int) -> _Attr:
        try:
            return self._attrs[handle]
        except KeyError:
            raise PeripheralError(f"no attribute with handle {handle}", handle=handle) from None

    def _reader(self, handle: int) -> Any:
        def read(_connection: Connection) -> bytes:
            return self._attrs[handle].value if handle in self._attrs else b""
        return read

    def _writer(self, handle: int) -> Any:
        def write(connection: Connection, value: bytes) -> None:
            attr = self._attrs.get(handle)
            if attr is None:
                return
            data = bytes(value)
            new = (attr.value + data) if attr.append else data
            attr.value = new[: attr.buffer_size]
            if self.listener is not None:
                self.listener.on_gatts_write(connection.handle, handle, attr.value)
        return write

    # -- local values ------------------------------------------------------------------

    def set_buffer(self, handle: int, size: int, append: bool = False) -> None:
        """``gatts_set_buffer``: largest remote write kept, and append mode."""
        if size < 0:
            raise PeripheralError(f"buffer size must be >= 0, got {size}", handle=handle)
        attr = self._attr(handle)
        attr.buffer_size, attr.append = size, append

    def write_local(self, handle: int, data: bytes) -> None:
        """``gatts_write``: set the local value (what centrals read); grows the buffer."""
        attr = self._attr(handle)
        attr.value = bytes(data)
        attr.buffer_size = max(attr.buffer_size, len(data))

    def read_local(self, handle: int) -> bytes:
        """The local value of ``handle``."""
        return self._attr(handle).value

    # -- advertising ---------------------------------------------------------------------

    async def advertise(self, interval_us: int | None, adv_data: bytes = b"", resp_data: bytes = b"",
                        connectable: bool = True) -> None:
        """``gap_advertise``: start (or with ``interval_us=None`` stop) advertising."""
        device = self.device
        if device.is_advertising:
            await device.stop_advertising()
        if interval_us is None:
            return
        if len(adv_data) > 31 or len(resp_data) > 31:
            raise PeripheralError("legacy advertising data is limited to 31 bytes",
                                  adv_len=len(adv_data), resp_len=len(resp_data))
        interval_ms = max(20.0, interval_us / 1000.0)
        adv_type = (AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE if connectable
                    else AdvertisingType.UNDIRECTED_SCANNABLE)
        await device.start_advertising(advertising_type=adv_type, advertising_data=bytes(adv_data),
                                       scan_response_data=bytes(resp_data), auto_restart=False,
                                       advertising_interval_min=interval_ms,
                                       advertising_interval_max=interval_ms)

    # -- connections ---------------------------------------------------------------------

    def _on_connection(self, connection: Connection) -> None:
        if connection.role != hci.Role.PERIPHERAL:
            return
        peer = connection.peer_address
        addr_type = ADDR_TYPE_PUBLIC if peer.is_public else ADDR_TYPE_RANDOM
        link = _Link(connection, addr_type, _address_bytes(peer))
        self._links[connection.handle] = link
        handle = connection.handle

        def on_mtu() -> None:
            link.mtu = connection.att_mtu
            if self.listener is not None:
                self.listener.on_mtu_exchanged(handle, connection.att_mtu)

        def on_disconnection(reason: int) -> None:
            self._links.pop(handle, None)
            logger.debug("central %s left (reason 0x%02X)", peer, reason)
            if self.listener is not None:
                self.listener.on_central_disconnect(handle, addr_type, link.addr)

        connection.on(connection.EVENT_CONNECTION_ATT_MTU_UPDATE, on_mtu)
        connection.on(connection.EVENT_DISCONNECTION, on_disconnection)
        logger.debug("central %s connected (conn %d)", peer, handle)
        if self.listener is not None:
            self.listener.on_central_connect(handle, addr_type, link.addr)

    def _link(self, conn: int) -> _Link:
        try:
            return self._links[conn]
        except KeyError:
            raise PeripheralError(f"no connection with handle {conn}", conn=conn) from None

    async def notify(self, conn: int, handle: int, data: bytes | None = None) -> int:
        """``gatts_notify``: send the local value or ``data``; returns the bytes sent.

        The payload is truncated to ``ATT_MTU - 3`` like on the ESP32.
        """
        link, attr = self._link(conn), self._attr(handle)
        payload = (attr.value if data is None else bytes(data))[: link.mtu - 3]
        await self.device.notify_subscriber(link.connection, attr.attribute, payload, force=True)
        return len(payload)

    async def indicate(self, conn: int, handle: int, data: bytes | None = None) -> None:
        """``gatts_indicate``: indicate and report the confirmation to the listener."""
        link, attr = self._link(conn), self._attr(handle)
        payload = (attr.value if data is None else bytes(data))[: link.mtu - 3]
        status = 0
        try:
            await self.device.indicate_subscriber(link.connection, attr.attribute, payload, force=True)
        except Exception as exc:  # any failure is reported to the firmware as a status, as on the board
            logger.debug("indication on conn %d failed: %s", conn, exc)
            status = 1
        if self.listener is not None:
            self.listener.on_indicate_done(conn, handle, status)

    async def disconnect(self, conn: int,
                         reason: int = hci.HCI_ErrorCode.REMOTE_USER_TERMINATED_CONNECTION_ERROR) -> None:
        """``gap_disconnect``: terminate one link."""
        link = self._link(conn)
        await link.connection.disconnect(reason)

    async def drop_all(self, reason: int = hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR) -> int:
        """Fault: drop every link now (the central sees ``reason``); returns how many dropped."""
        links = list(self._links.values())
        for link in links:
            try:
                await link.connection.disconnect(reason)
            except Exception as exc:  # already gone is fine for a fault
                logger.debug("drop of conn %d: %s", link.connection.handle, exc)
        return len(links)
