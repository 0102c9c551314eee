"""bleak backends on the virtual radio: code written against bleak's public API runs unchanged.

Usage::

    Scanner, Client = make_backends("ws://127.0.0.1:PORT/civicedge")
    device = await BleakScanner.find_device_by_filter(..., backend=Scanner)
    async with BleakClient(device, backend=Client) as client:
        await client.start_notify(TX_UUID, on_data)

Both classes run on a :class:`~hil.sim.radio.central.SharedCentral` (one Bumble central per
event loop and radio, like one adapter per host). ``BleakClient(..., mtu=23)`` (a backend
keyword, passed through by bleak) chooses the ATT MTU to request; the default is the
``mtu`` given to :func:`make_backends` (247). MTU 23 means "no exchange", as with a central
that never sends Exchange MTU. With ``linger_s`` (the gateway's transport gives :data:`DEFAULT_LINGER_S`)
the central stays joined that long after its last scanner or client is done, as an adapter stays
powered on between scans; a process that stops using the radio calls ``Scanner.leave_radio()`` to
leave at once. Lingering needs the loop's tasks cancelled at its end (``asyncio.run``, ``asyncio.Runner``):
a loop merely closed keeps the central joined, hence the default 0.

Errors follow bleak's conventions: a connect that does not complete raises ``TimeoutError``;
operations on a dropped link raise :class:`bleak.exc.BleakError`; ATT errors raise
:class:`bleak.exc.BleakGATTProtocolError`; every remote operation has a timeout. A relay that
cannot be reached is :class:`bleak.exc.BleakBluetoothNotAvailableError` (no adapter), at scanner
start and at connect; so is a radio lost under a scan or a connect (relay stopped or restarted: the
adapter went away) or one whose HCI commands time out (given up as lost), and the next scan or
connect joins the radio again (:class:`~hil.sim.radio.central.SharedCentral`). Any other failure of
an HCI command is a plain :class:`bleak.exc.BleakError`. Nothing else of Bumble's or the relay's
leaves the backend for these failures, so a caller can tell them from its own defects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Optional

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES, CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakError,
    BleakGATTProtocolError,
)
from bleak.uuids import normalize_uuid_str
from bumble import core, hci
from bumble.att import ATT_Error
from bumble.core import UUID as BumbleUUID
from bumble.device import Advertisement, Connection, Peer
from bumble.transport.common import TransportLostError

from hil.sim.radio.advdata import parse_ad_structures
from hil.sim.radio.central import SharedCentral, shared_central
from hil.sim.radio.errors import RadioConnectError
from hil.sim.radio.url import parse_radio_url

logger = logging.getLogger(__name__)

ATT_DEFAULT_MTU = 23
DEFAULT_OP_TIMEOUT_S = 10.0
DEFAULT_LINGER_S = 30.0  # the gateway's BLE transport (gateway.transports.ble_link.resolve_backends)
_background: set[asyncio.Task[None]] = set()  # keep release tasks alive until done


@dataclass(frozen=True)
class VirtualDeviceDetails:
    """``BLEDevice.details`` for devices found on the virtual radio."""

    address: hci.Address
    radio_url: str


def _bleak_uuid(uuid: BumbleUUID) -> str:
    text = uuid.to_hex_str("-")
    return normalize_uuid_str(text.lower())


def _address_text(address: hci.Address) -> str:
    return address.to_string(with_type_qualifier=False)


async def _acquire(central: SharedCentral) -> None:
    """Join the radio; an unreachable relay is bleak's "no Bluetooth adapter"."""
    try:
        await central.acquire()
    except RadioConnectError as exc:
        raise BleakBluetoothNotAvailableError(str(exc), BleakBluetoothNotAvailableReason.NO_BLUETOOTH) from exc


def _radio_failure(central: SharedCentral, what: str, exc: BaseException, *, generation: int) -> BleakError:
    """The BleakError for an HCI command that failed.

    A lost radio (the relay closed the connection, the device was given up) or a command that timed
    out (the device is given up, if it is still the one of ``generation``: :attr:`SharedCentral.generation`
    before the command) is :class:`BleakBluetoothNotAvailableError`, as an adapter that went away;
    any other failure a plain :class:`BleakError`.
    """
    message = f"{what} on the virtual radio {central.radio_url} failed: {exc!r}"
    if isinstance(exc, core.CommandTimeoutError):
        central.invalidate(f"{what}: HCI command timed out", generation=generation)
    if isinstance(exc, (core.CommandTimeoutError, TransportLostError, RadioConnectError)):
        return BleakBluetoothNotAvailableError(message, BleakBluetoothNotAvailableReason.NO_BLUETOOTH)
    return BleakError(message)


class VirtualBleakScanner(BaseBleakScanner):
    """bleak scanner backend on the virtual radio (see :func:`make_backends`)."""

    radio_url: str = ""
    linger_s: float = 0.0

    def __init__(self, detection_callback: Optional[AdvertisementDataCallback],
                 service_uuids: Optional[list[str]],
                 scanning_mode: Literal["active", "passive"] = "active", **kwargs: Any) -> None:
        super().__init__(detection_callback, service_uuids)
        if scanning_mode not in ("active", "passive"):
            raise BleakError(f"scanning_mode must be 'active' or 'passive', got {scanning_mode!r}")
        self._active = scanning_mode == "active"
        self._central: SharedCentral | None = None
        self._generation = 0

    @classmethod
    async def leave_radio(cls) -> None:
        """Make this radio's central leave now if no scanner or client uses it (rather than after its linger)."""
        await shared_central(cls.radio_url).leave_if_idle()

    async def start(self) -> None:
        """Start scanning (clears :attr:`seen_devices`).

        Raises:
            BleakBluetoothNotAvailableError: the relay cannot be reached, or the radio was lost (or
                its HCI commands time out).
            BleakError: the radio refused to start scanning.
        """
        if self._central is not None:
            return
        self.seen_devices = {}
        central = shared_central(self.radio_url)
        await _acquire(central)
        self._central = central
        self._generation = central.generation
        try:
            await central.add_scanner(self, self._on_advertisement, self._active)
        except BaseException as exc:  # a cancel too: the reference and the scanner entry are given back
            await self.stop_quietly()
            if isinstance(exc, (core.BaseBumbleError, RadioConnectError)):
                raise _radio_failure(central, "starting a scan", exc, generation=self._generation) from exc
            raise

    async def stop(self) -> None:
        """Stop scanning.

        Raises:
            BleakBluetoothNotAvailableError: the radio was lost while scanning (what was found may be
                incomplete).
            BleakError: the radio refused to stop scanning.
        """
        central, self._central = self._central, None
        if central is None:
            return
        try:
            await central.remove_scanner(self)
        except core.BaseBumbleError as exc:
            raise _radio_failure(central, "stopping a scan", exc, generation=self._generation) from exc
        finally:
            await central.release(self.linger_s)
        if central.generation != self._generation:
            raise BleakBluetoothNotAvailableError(f"the virtual radio {central.radio_url} was lost during the scan",
                                                  BleakBluetoothNotAvailableReason.NO_BLUETOOTH)

    async def stop_quietly(self) -> None:
        """Stop scanning; errors of a lost radio are not raised."""
        try:
            await self.stop()
        except BleakError as exc:
            logger.debug("stopping a scan: %s", exc)

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        parsed = parse_ad_structures(bytes(advertisement.data))
        if not self.is_allowed_uuid(parsed.service_uuids):
            return
        tx_power = parsed.tx_power
        data = AdvertisementData(
            local_name=parsed.local_name, manufacturer_data=parsed.manufacturer_data,
            service_data=parsed.service_data, service_uuids=parsed.service_uuids,
            tx_power=tx_power, rssi=int(advertisement.rssi), platform_data=(advertisement,))
        address = _address_text(advertisement.address)
        device = self.create_or_update_device(
            address, address, parsed.local_name,
            VirtualDeviceDetails(advertisement.address, self.radio_url), data)
        self.call_detection_callbacks(device, data)


class VirtualBleakClient(BaseBleakClient):
    """bleak client backend on the virtual radio (see :func:`make_backends`).

    Keyword Args:
        mtu: ATT MTU to request after connecting (23..517; 23 = no exchange).
        op_timeout: seconds allowed for each GATT operation.
    """

    radio_url: str = ""
    default_mtu: int = 247
    linger_s: float = 0.0

    def __init__(self, address_or_ble_device: BLEDevice | str, *,
                 disconnected_callback: Callable[[], None] | None, timeout: float = 10.0,
                 services: set[str] | None = None, mtu: int | None = None,
                 op_timeout: float = DEFAULT_OP_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback,
                         timeout=timeout)
        self._requested_mtu = self.default_mtu if mtu is None else int(mtu)
        if not ATT_DEFAULT_MTU <= self._requested_mtu <= 517:
            raise BleakError(f"mtu must be 23..517, got {self._requested_mtu}")
        self._op_timeout = op_timeout
        self._service_filter = services
        self._name = (address_or_ble_device.name if isinstance(address_or_ble_device, BLEDevice)
                      and address_or_ble_device.name else self.address)
        self._peer_address = self._resolve_address(address_or_ble_device)
        self._central: SharedCentral | None = None
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._disconnecting = False
        self._disconnected = asyncio.Event()
        self._subscribers: dict[int, Callable[[bytes], None]] = {}
        self._release_task: asyncio.Task[None] | None = None

    @staticmethod
    def _resolve_address(target: BLEDevice | str) -> hci.Address:
        if isinstance(target, BLEDevice) and isinstance(target.details, VirtualDeviceDetails):
            return target.details.address
        text = target.address if isinstance(target, BLEDevice) else target
        if not isinstance(text, str):
            raise BleakError(f"need a BLEDevice or an address string, got {target!r}")
        try:
            # Boards on the virtual radio use random static addresses.
            return hci.Address(text, hci.Address.RANDOM_DEVICE_ADDRESS)
        except (ValueError, core.InvalidArgumentError) as exc:
            raise BleakError(f"not a Bluetooth address: {text!r}") from exc

    @property
    def name(self) -> str:
        """The device name seen when scanning, else its address."""
        return self._name

    @property
    def mtu_size(self) -> int:
        """The negotiated ATT MTU (23 before/without an exchange)."""
        return self._connection.att_mtu if self._connection is not None else ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        """True while the link is up."""
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Connect, exchange the MTU, discover GATT services.

        Raises:
            TimeoutError: the peripheral did not answer within ``timeout`` (not advertising,
                not on this radio).
            BleakBluetoothNotAvailableError: the relay cannot be reached, or the radio was lost
                (or its HCI commands time out).
            BleakError: the link dropped during setup, or the radio refused the connection.
        """
        if self._connection is not None:
            return
        central = shared_central(self.radio_url)
        await _acquire(central)
        self._central = central
        try:
            async with central.connect_lock:
                generation = central.generation  # the device this connect goes to (see _radio_failure)
                try:
                    connection = await central.device.connect(self._peer_address, timeout=self._timeout)
                except core.TimeoutError as exc:
                    raise TimeoutError(f"no connection to {self.address} within {self._timeout} s") from exc
                except core.ConnectionError as exc:
                    raise BleakError(f"connection to {self.address} failed: {exc}") from exc
                except (core.BaseBumbleError, RadioConnectError) as exc:  # radio lost, HCI command timed out
                    raise _radio_failure(central, f"connecting to {self.address}", exc,
                                         generation=generation) from exc
            self._connection = connection
            self._disconnected.clear()
            self._disconnecting = False
            connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
            peer = self._peer = Peer(connection)
            if self._requested_mtu > ATT_DEFAULT_MTU:
                await self._remote(peer.request_mtu(self._requested_mtu), "MTU exchange")
            self.services = await self._discover(peer)
            if pair:
                await self.pair()
        except BaseException:
            await self._teardown()
            raise

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        await self._remote(peer.discover_services(), "service discovery")
        for service in peer.services:
            uuid = _bleak_uuid(service.uuid)
            if self._service_filter is not None and uuid not in self._service_filter:
                continue
            await self._remote(service.discover_characteristics(), "characteristic discovery")
            bleak_service = BleakGATTService(service, service.handle, uuid)
            collection.add_service(bleak_service)
            for characteristic in service.characteristics:
                await self._remote(characteristic.discover_descriptors(), "descriptor discovery")
                props: list[CharacteristicPropertyName] = [
                    name for bit, name in CHARACTERISTIC_PROPERTIES.items() if characteristic.properties & bit]
                bleak_char = BleakGATTCharacteristic(
                    characteristic, characteristic.handle, _bleak_uuid(characteristic.uuid), props,
                    lambda: self.mtu_size - 3, bleak_service)
                collection.add_characteristic(bleak_char)
                for descriptor in characteristic.descriptors:
                    collection.add_descriptor(BleakGATTDescriptor(
                        descriptor, descriptor.handle, _bleak_uuid(descriptor.type), bleak_char))
        return collection

    def _on_disconnection(self, reason: int) -> None:
        logger.debug("link to %s dropped (reason 0x%02X)", self.address, reason)
        solicited = self._disconnecting
        self._connection, self._peer = None, None
        self._subscribers.clear()
        self._disconnected.set()
        if solicited:
            return  # disconnect() releases the central itself, after this event
        central, self._central = self._central, None
        if central is not None:
            task = asyncio.get_running_loop().create_task(central.release(self.linger_s))
            _background.add(task)
            task.add_done_callback(_background.discard)
            self._release_task = task
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def _teardown(self) -> None:
        connection = self._connection
        if connection is not None:
            self._disconnecting = True
            try:
                async with asyncio.timeout(self._op_timeout):  # not wait_for: it can lose a cancel (hostlink)
                    await connection.disconnect()
                async with asyncio.timeout(self._op_timeout):
                    await self._disconnected.wait()
            except (asyncio.TimeoutError, core.BaseBumbleError) as exc:
                logger.debug("disconnect from %s: %s", self.address, exc)
        self._connection, self._peer = None, None
        central, self._central = self._central, None
        if central is not None:
            await central.release(self.linger_s)
        release, self._release_task = self._release_task, None
        if release is not None:
            await release  # after a drop: its release is done before returning

    async def disconnect(self) -> None:
        """Disconnect (no-op when not connected); the disconnected callback is not called."""
        await self._teardown()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Pair (LE Secure Connections, just works) with the peripheral's Bumble host."""
        connection = self._require_connection()
        await self._remote(connection.pair(), "pairing")

    async def unpair(self) -> None:
        """Unpairing is not offered by the virtual radio (no bond store)."""
        raise BleakError("unpair is not supported on the virtual radio (bonds are not stored)")

    # -- GATT I/O ------------------------------------------------------------------------

    def _require_connection(self) -> Connection:
        if self._connection is None:
            raise BleakError(f"not connected to {self.address}")
        return self._connection

    async def _remote(self, awaitable: Any, what: str) -> Any:
        if self._connection is None and asyncio.iscoroutine(awaitable):
            awaitable.close()  # never started: avoid a "never awaited" warning
        connection = self._require_connection()
        try:
            async with asyncio.timeout(self._op_timeout):  # not wait_for: it can lose a cancel (hostlink)
                return await connection.cancel_on_disconnection(awaitable)
        except asyncio.TimeoutError as exc:
            raise TimeoutError(f"{what} on {self.address} took longer than {self._op_timeout} s") from exc
        except ATT_Error as exc:
            raise BleakGATTProtocolError(exc.error_code) from exc
        except (core.ConnectionError, core.BaseBumbleError) as exc:
            raise BleakError(f"{what} on {self.address} failed: {exc}") from exc
        except asyncio.CancelledError:
            if self._connection is None:
                raise BleakError(f"{what} on {self.address}: disconnected") from None
            raise

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, *,
                             use_cached: bool = False, **kwargs: Any) -> bytearray:
        """Read a characteristic value (long reads included)."""
        return bytearray(await self._remote(characteristic.obj.read_value(), "read"))

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, *,
                                   use_cached: bool = False, **kwargs: Any) -> bytearray:
        """Read a descriptor value."""
        return bytearray(await self._remote(descriptor.obj.read_value(), "descriptor read"))

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer,
                              response: bool) -> None:
        """Write with or without response."""
        await self._remote(characteristic.obj.write_value(bytes(data), with_response=response), "write")

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        """Write a descriptor (with response)."""
        await self._remote(descriptor.obj.write_value(bytes(data), with_response=True), "descriptor write")

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback,
                           **kwargs: Any) -> None:
        """Subscribe (notifications preferred over indications)."""
        def subscriber(value: bytes) -> None:
            callback(bytearray(value))

        await self._remote(characteristic.obj.subscribe(subscriber, prefer_notify=True), "subscribe")
        self._subscribers[characteristic.handle] = subscriber

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        """Unsubscribe."""
        subscriber = self._subscribers.pop(characteristic.handle, None)
        await self._remote(characteristic.obj.unsubscribe(subscriber), "unsubscribe")


def make_backends(radio_url: str, *, mtu: int = 247,
                  linger_s: float = 0.0) -> tuple[type[VirtualBleakScanner], type[VirtualBleakClient]]:
    """bleak backend classes bound to one virtual radio.

    Args:
        radio_url: ``ws://HOST:PORT/ROOM`` of a running relay (:mod:`hil.sim.radio.relay`).
        mtu: default ATT MTU the client requests (``BleakClient(..., mtu=N)`` overrides).
        linger_s: seconds the shared central stays joined after its last scanner or client is done,
            re-used by the next one within that time (0: it leaves the radio at once, and each scan
            after an idle moment joins again). ``ScannerClass.leave_radio()`` leaves earlier.

    Returns:
        ``(ScannerClass, ClientClass)`` for ``BleakScanner(backend=...)`` / ``BleakClient(backend=...)``.

    Raises:
        RadioUrlError: ``radio_url`` is malformed.
        BleakError: ``mtu`` or ``linger_s`` is out of range.
    """
    url = parse_radio_url(radio_url).url
    if not ATT_DEFAULT_MTU <= mtu <= 517:
        raise BleakError(f"mtu must be 23..517, got {mtu}")
    if not 0 <= linger_s < float("inf"):  # NaN fails too
        raise BleakError(f"linger_s must be a finite number of seconds >= 0, got {linger_s!r}")
    scanner = type("VirtualRadioScanner", (VirtualBleakScanner,), {"radio_url": url, "linger_s": linger_s})
    client = type("VirtualRadioClient", (VirtualBleakClient,),
                  {"radio_url": url, "default_mtu": mtu, "linger_s": linger_s})
    return scanner, client
