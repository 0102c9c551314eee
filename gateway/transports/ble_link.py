"""BLE transport: a bleak central that finds boards by service UUID and keeps connections to them.

Only bleak's public API is used (``BleakScanner``/``BleakClient`` with ``backend=``), so the same code
runs on BlueZ and on the simulator's virtual radio. Per connection: subscribe to TX notifications,
reassemble fragments into frames, write ACK frames fragmented to the ATT MTU to RX (write without
response). A failed or dropped connection is retried with exponential backoff per address, and
at most ``max_connections`` are open at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError

from gateway.config.model import BleConfig
from gateway.errors import ProtocolError, TransportError
from gateway.metrics import GatewayMetrics
from gateway.pipeline.ingest import Link
from gateway.protocol.ble_fragments import FragmentReassembler, fragment_frame
from gateway.transports.base import FrameSink

log = logging.getLogger(__name__)

TX_UUID = "6c3e0002-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
RX_UUID = "6c3e0003-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_S = 10.0
WRITE_TIMEOUT_S = 5.0


def resolve_backends(config: BleConfig) -> tuple[Any, Any]:
    """Return ``(scanner_backend, client_backend)`` for bleak: None for the OS default (BlueZ).

    Raises:
        TransportError: reason ``open_failed`` if the virtual radio backend is unavailable or its
            radio URL is missing or malformed.
    """
    if config.backend != "virtual":
        return None, None
    try:
        # Imported lazily: production gateways do not need the simulator.
        from hil.sim.radio.bleak_backend import make_backends
        from hil.sim.radio.errors import RadioUrlError
    except ImportError as exc:
        raise TransportError("virtual BLE backend unavailable: %s" % exc, reason="open_failed", link="ble") from exc
    if config.radio is None:
        raise TransportError("[ble] backend = \"virtual\" needs radio = \"ws://HOST:PORT/ROOM\"", reason="open_failed",
                             link="ble")
    try:
        return make_backends(config.radio)
    except RadioUrlError as exc:  # the config loader refuses these; a BleConfig built in code may not
        raise TransportError("[ble] radio: %s" % exc, reason="open_failed", link="ble") from exc


class BleTransport:
    """BLE central transport.

    Args:
        config: the ``[ble]`` section.
        metrics: ``ble_connected`` and ``link_state{link="ble"}``.
        backends: ``(scanner_backend, client_backend)``; default from :func:`resolve_backends`.
    """

    name = "ble"

    def __init__(self, config: BleConfig, *, metrics: GatewayMetrics | None = None,
                 backends: tuple[Any, Any] | None = None) -> None:
        self._config = config
        self._metrics = metrics
        self._scanner_cls, self._client_cls = backends if backends is not None else resolve_backends(config)
        self._connections: dict[str, asyncio.Task[None]] = {}
        self._clients: dict[str, BleakClient] = {}
        self._backoff: dict[str, tuple[float, float]] = {}  # address -> (not before, current delay)
        self._msg = 0

    @property
    def connected(self) -> int:
        """Number of open connections."""
        return len(self._clients)

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.ble_connected.set(len(self._clients))

    async def run(self, sink: FrameSink) -> None:
        """Scan and connect until cancelled."""
        if self._metrics is not None:
            self._metrics.link_state.labels("ble").set(0)
        try:
            while True:
                try:
                    found = await BleakScanner.discover(
                        timeout=self._config.scan_interval_s, service_uuids=[self._config.service_uuid],
                        backend=self._scanner_cls, return_adv=True,
                    )
                    if self._metrics is not None:
                        self._metrics.link_state.labels("ble").set(1)
                except (BleakError, OSError, asyncio.TimeoutError) as exc:
                    if self._metrics is not None:
                        self._metrics.link_state.labels("ble").set(0)
                    log.warning("BLE scan failed: %s; retrying", exc)
                    await asyncio.sleep(self._config.scan_interval_s)
                    continue
                now = time.monotonic()
                for address, (device, adv) in sorted(found.items()):
                    if self._config.service_uuid not in [u.lower() for u in adv.service_uuids]:
                        continue
                    if address in self._connections or len(self._connections) >= self._config.max_connections:
                        continue
                    if self._backoff.get(address, (0.0, 0.0))[0] > now:
                        continue
                    task = asyncio.create_task(self._serve(device, sink), name="ble-%s" % address)
                    self._connections[address] = task
                    task.add_done_callback(self._forget(address))
                if len(self._connections) >= self._config.max_connections:
                    await asyncio.sleep(self._config.scan_interval_s)
        finally:
            await self.close()

    def _forget(self, address: str) -> Callable[["asyncio.Task[None]"], None]:
        def done(_task: "asyncio.Task[None]") -> None:
            self._connections.pop(address, None)

        return done

    async def _serve(self, device: BLEDevice, sink: FrameSink) -> None:
        address = device.address
        link_name = "ble:%s" % address
        reassembler = FragmentReassembler()
        gone = asyncio.Event()
        client = BleakClient(device, disconnected_callback=lambda _c: gone.set(), backend=self._client_cls,
                             timeout=self._config.connect_timeout_s)
        started = time.monotonic()
        try:
            await client.connect()
            self._clients[address] = client
            self._gauge()
            mtu = max(23, int(client.mtu_size))
            lock = asyncio.Lock()

            async def send(frame: bytes) -> None:
                async with lock:  # fragments of two ACKs must not interleave
                    self._msg = (self._msg + 1) & 0xFF
                    try:
                        for frag in fragment_frame(frame, mtu, self._msg):
                            await asyncio.wait_for(client.write_gatt_char(RX_UUID, frag, response=False),
                                                   WRITE_TIMEOUT_S)
                    except asyncio.TimeoutError as exc:
                        raise TransportError("write to %s timed out" % address, reason="timeout",
                                             link=link_name) from exc
                    except (BleakError, OSError) as exc:
                        raise TransportError("write to %s failed: %s" % (address, exc), reason="disconnected",
                                             link=link_name) from exc

            link = Link(name=link_name, kind="ble", send=send)

            def on_notify(_char: Any, data: bytearray) -> None:
                for item in reassembler.feed(bytes(data)):
                    sink(item, link)

            await client.start_notify(TX_UUID, on_notify)
            log.info("BLE connected to %s (%s), ATT MTU %d", address, device.name, mtu)
            await gone.wait()
            log.info("BLE %s disconnected", address)
        except (BleakError, OSError, asyncio.TimeoutError, TransportError) as exc:
            log.info("BLE connection to %s failed: %s", address, exc)
        finally:
            reassembler.reset()
            self._clients.pop(address, None)
            self._gauge()
            stable = time.monotonic() - started >= STABLE_S
            delay = BACKOFF_MIN_S if stable else min(BACKOFF_MAX_S, 2 * self._backoff.get(address, (0.0, BACKOFF_MIN_S / 2))[1])
            self._backoff[address] = (time.monotonic() + delay, delay)
            if client.is_connected:
                try:
                    await asyncio.wait_for(client.disconnect(), 5.0)
                except (BleakError, OSError, asyncio.TimeoutError):
                    pass

    async def close(self) -> None:
        """Cancel every connection task and disconnect."""
        tasks = list(self._connections.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._connections.clear()
        self._clients.clear()
        self._gauge()
