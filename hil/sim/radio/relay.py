"""The virtual radio: a WebSocket relay hosting Bumble emulated controllers on shared links.

Every WebSocket connection to ``ws://HOST:PORT/ROOM`` is one Bluetooth controller in room
``ROOM``; each message is one HCI packet with its H4 type byte (Bumble's ``ws-client``
transport speaks exactly this), so any Bumble host in any process joins the radio with
``open_transport("ws-client:ws://HOST:PORT/ROOM")``. Controllers in one room hear each other's
advertisements and can connect; rooms are isolated from each other.

Use :func:`start_relay` for a relay on a background thread (tests, ``civicedge sim``), or
``python -m hil.sim.radio`` for a standalone one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from hil.sim.radio.controller import RadioController, RadioLink
from hil.sim.radio.errors import RadioError
from hil.sim.radio.url import DEFAULT_ROOM, RadioUrl, parse_radio_url

logger = logging.getLogger(__name__)

_MAX_HCI_PACKET = 4 + 65535  # ACL header + max payload


class _HostSink:
    """Packet sink for a controller: queues controller→host packets for the WebSocket."""

    def __init__(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._queue = queue

    def on_packet(self, packet: bytes) -> None:
        self._queue.put_nowait(packet)


@dataclass
class RadioServer:
    """The relay's state: one :class:`RadioLink` per room, inside one event loop.

    Attributes:
        host: interface to bind (loopback by default: the radio is for this machine).
        port: TCP port; 0 picks a free one (see :attr:`url` after :meth:`start`).
    """

    host: str = "127.0.0.1"
    port: int = 0
    rooms: dict[str, RadioLink] = field(default_factory=dict)
    _server: Server | None = None
    _counter: int = 0

    @property
    def url(self) -> str:
        """URL of the default room (``ws://host:port/civicedge``)."""
        return RadioUrl(self.host, self.port, DEFAULT_ROOM).url

    def room_size(self, room: str = DEFAULT_ROOM) -> int:
        """Number of controllers currently on ``room``."""
        link = self.rooms.get(room)
        return 0 if link is None else len(link.controllers)

    async def start(self) -> None:
        """Bind and start accepting radio clients."""
        server = await serve(self._handle, self.host, self.port, max_size=_MAX_HCI_PACKET,
                             compression=None, ping_interval=None, close_timeout=1.0)
        self._server = server
        sock = next(iter(server.sockets))
        self.port = int(sock.getsockname()[1])
        logger.info("virtual radio listening on ws://%s:%s/", self.host, self.port)

    async def stop(self) -> None:
        """Close every client connection and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "/"
        try:
            room = parse_radio_url(f"ws://{self.host}:{self.port}{path}").room
        except RadioError:
            logger.warning("radio client asked for a malformed room %r; closing", path)
            await ws.close(code=1008, reason="bad room")
            return
        link = self.rooms.get(room)
        if link is None:
            link = self.rooms[room] = RadioLink()
        self._counter += 1
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        controller = RadioController(f"{room}#{self._counter}", link=link)
        controller.host = _HostSink(queue)
        logger.debug("controller %s joined room %s", controller.name, room)
        writer = asyncio.create_task(self._pump_to_host(ws, queue))
        try:
            async for message in ws:
                packet = message.encode() if isinstance(message, str) else bytes(message)
                try:
                    controller.on_packet(packet)
                except Exception:  # a bad packet from one client must not kill the radio
                    logger.exception("controller %s rejected a packet", controller.name)
        except ConnectionClosed:
            pass
        finally:
            controller.vanish()
            queue.put_nowait(None)
            writer.cancel()
            logger.debug("controller %s left room %s", controller.name, room)

    @staticmethod
    async def _pump_to_host(ws: ServerConnection, queue: asyncio.Queue[bytes | None]) -> None:
        # One writer per client keeps controller→host packets in order.
        try:
            while (packet := await queue.get()) is not None:
                await ws.send(packet)
        except ConnectionClosed:
            pass


class RadioHandle:
    """A relay running on a background thread; stop it with :meth:`stop` or ``with``.

    Attributes:
        url: radio URL of the default room (``ws://127.0.0.1:PORT/civicedge``).
        port: the bound TCP port.
    """

    def __init__(self, server: RadioServer, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._server = server
        self._loop = loop
        self._thread = thread
        self.port = server.port
        self.url = server.url

    def room_url(self, room: str) -> str:
        """URL of another (isolated) room on the same relay."""
        return parse_radio_url(f"ws://{self._server.host}:{self.port}/{room}").url

    def room_size(self, room: str = DEFAULT_ROOM) -> int:
        """Number of controllers on ``room`` right now (thread-safe read)."""
        future = asyncio.run_coroutine_threadsafe(self._room_size(room), self._loop)
        return future.result(timeout=5)

    async def _room_size(self, room: str) -> int:
        return self._server.room_size(room)

    async def aclose(self) -> None:
        """:meth:`stop` from async code: keeps the caller's loop running while clients in it
        complete the WebSocket close handshake (a blocking ``stop()`` would stall them)."""
        await asyncio.to_thread(self.stop)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the relay and join its thread (idempotent).

        From a coroutine whose loop also hosts radio clients, use :meth:`aclose` instead.
        """
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout_s)

    _stop_event: asyncio.Event

    def __enter__(self) -> RadioHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_relay(host: str = "127.0.0.1", port: int = 0, *, timeout_s: float = 10.0) -> RadioHandle:
    """Start a virtual radio relay on a background thread.

    Args:
        host: interface to bind (keep loopback unless boards on other machines must join).
        port: TCP port, 0 for a free one.
        timeout_s: how long to wait for the relay to be listening.

    Returns:
        A :class:`RadioHandle`; its ``url`` is what peripherals and the bleak backend take.

    Raises:
        RadioError: the relay could not bind or did not start in time.
    """
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        server = RadioServer(host=host, port=port)
        stop_event = asyncio.Event()
        try:
            await server.start()
        except OSError as exc:
            box["error"] = exc
            ready.set()
            return
        box["server"] = server
        box["loop"] = asyncio.get_running_loop()
        box["stop"] = stop_event
        ready.set()
        try:
            await stop_event.wait()
        finally:
            await server.stop()

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="civicedge-radio", daemon=True)
    thread.start()
    if not ready.wait(timeout_s):
        raise RadioError("virtual radio relay did not start in time", timeout_s=timeout_s)
    if "error" in box:
        raise RadioError(f"virtual radio relay could not bind {host}:{port}: {box['error']}",
                         host=host, port=port)
    handle = RadioHandle(box["server"], box["loop"], thread)
    handle._stop_event = box["stop"]
    return handle


@contextmanager
def running_relay(host: str = "127.0.0.1", port: int = 0) -> Iterator[RadioHandle]:
    """Context manager around :func:`start_relay`."""
    handle = start_relay(host, port)
    try:
        yield handle
    finally:
        handle.stop()
