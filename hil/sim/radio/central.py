"""A shared central on the virtual radio: one Bumble device per (event loop, radio URL).

Like one Bluetooth adapter on a host, every bleak scanner and client of a process on the same
radio uses the same central (reference-counted). Scanning is shared between scanners; LE connection
attempts are serialised (one controller has one pending connection at a time, as on real hardware).

After its last user releases it, the central stays joined for ``linger_s`` (an adapter stays powered
on between scans): the next scan or connection within that time re-uses it, and only then does it
leave the radio. Joining per scan cost a WebSocket, a Bumble ``Device``/``Host`` and a power-on each
time; those objects form reference cycles, freed only by the collector's full passes, so a process
scanning every second piled them up between passes. A lingering central also leaves at once when
:meth:`SharedCentral.leave_if_idle` is called, and when its task is cancelled at the event loop's
shutdown (``asyncio.run``, ``asyncio.Runner``).

When the relay goes away (stopped, restarted, crashed: the HCI transport closes) or an HCI command
to it times out, the central forgets its device (:attr:`SharedCentral.generation` moves on) and the
next :meth:`SharedCentral.acquire` joins the radio again, as a host re-opens an adapter that was
unplugged: scanners and clients of the lost device get errors, new ones work once the relay is back.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

from bumble import core
from bumble.device import Advertisement, Device
from bumble.transport.common import Transport

from hil.sim.radio.address import random_static_address
from hil.sim.radio.errors import RadioConnectError
from hil.sim.radio.hostlink import open_radio_device
from hil.sim.radio.url import parse_radio_url

logger = logging.getLogger(__name__)

AdvertisementListener = Callable[[Advertisement], None]


class SharedCentral:
    """A powered-on Bumble central device, shared by the bleak objects of one event loop."""

    def __init__(self, radio_url: str) -> None:
        self.radio_url = parse_radio_url(radio_url).url
        self.address = random_static_address()
        self.connect_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self._users = 0
        self._transport: Transport | None = None
        self._device: Device | None = None
        self._scanners: dict[object, AdvertisementListener] = {}
        self._active_scan = False
        self._closing: set[asyncio.Task[None]] = set()
        self._linger: asyncio.Task[None] | None = None
        self.generation = 0
        """Moves on each time the device is given up (radio lost); a user compares it to tell."""

    @property
    def device(self) -> Device:
        """The Bumble device (valid while acquired)."""
        if self._device is None:
            raise RadioConnectError("the virtual central is not open", url=self.radio_url)
        return self._device

    async def acquire(self, timeout_s: float = 10.0) -> None:
        """Take a reference, joining the radio on first use (or again after it was lost).

        Raises:
            RadioConnectError: the relay cannot be reached, or its controller did not answer.
        """
        async with self._open_lock:
            self._stop_lingering()
            if self._transport is not None and self._transport.source.terminated.done():
                # the relay closed it and the terminated callback has not run yet: not reusable
                self._lost(self._transport, "the relay closed the connection")
            if self._device is None:
                transport, device = await open_radio_device(
                    self.radio_url, name="civicedge-central", address=self.address, timeout_s=timeout_s)
                try:
                    device.on(device.EVENT_ADVERTISEMENT, self._on_advertisement)
                    async with asyncio.timeout(timeout_s):  # not wait_for: it can lose a cancel (hostlink)
                        await device.power_on()
                except BaseException as exc:
                    await _close_quietly(transport)
                    if isinstance(exc, (asyncio.TimeoutError, core.BaseBumbleError)):
                        raise RadioConnectError(f"the virtual radio at {self.radio_url} did not answer: {exc!r}",
                                                url=self.radio_url) from exc
                    raise
                self._transport, self._device = transport, device
                transport.source.terminated.add_done_callback(self._on_terminated(transport))
                logger.debug("central %s joined %s", self.address, self.radio_url)
            self._users += 1

    def _on_terminated(self, transport: Transport) -> Callable[["asyncio.Future[None]"], None]:
        def lost(_future: "asyncio.Future[None]") -> None:
            self._lost(transport, "the relay closed the connection")

        return lost

    def invalidate(self, reason: str, *, generation: int) -> None:
        """Give up the device an HCI command timed out on: the next :meth:`acquire` joins again.

        Args:
            reason: why, for the log.
            generation: :attr:`generation` read before the command was sent. If it moved on since, the
                device the command went to was given up already and the current one (joined again
                meanwhile, maybe by another user) is kept.
        """
        if self._transport is not None and generation == self.generation:
            self._lost(self._transport, reason)

    def _lost(self, transport: Transport, reason: str) -> None:
        if self._transport is not transport:
            return  # released on purpose, or given up already
        self._transport, self._device = None, None
        self._scanners.clear()
        self._stop_lingering()
        self.generation += 1
        logger.info("central %s lost the virtual radio %s (%s); it joins again at its next use",
                    self.address, self.radio_url, reason)
        task = asyncio.get_running_loop().create_task(_close_quietly(transport))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def release(self, linger_s: float = 0.0) -> None:
        """Drop a reference; after the last one the central leaves the radio ``linger_s`` later.

        Args:
            linger_s: how long the central stays joined, unused, for the next :meth:`acquire` (0: it
                leaves now). The last release before the central goes idle decides.
        """
        async with self._open_lock:
            self._users = max(0, self._users - 1)
            if self._users or self._transport is None:
                return
            if linger_s > 0:
                self._stop_lingering()
                self._linger = asyncio.get_running_loop().create_task(
                    self._leave_later(self._transport, linger_s), name=f"radio-central-linger {self.radio_url}")
                return
            await self._leave(self._transport)

    async def leave_if_idle(self) -> None:
        """Leave the radio now if no one uses the central (it lingers, or it left already)."""
        async with self._open_lock:
            if self._users == 0 and self._transport is not None:
                self._stop_lingering()
                await self._leave(self._transport)

    def _stop_lingering(self) -> None:
        linger, self._linger = self._linger, None
        if linger is not None:
            linger.cancel()  # it sees it is no longer self._linger: the device is kept (or lost already)

    async def _leave_later(self, transport: Transport, linger_s: float) -> None:
        try:
            await asyncio.sleep(linger_s)
        except asyncio.CancelledError:
            if self._linger is asyncio.current_task():  # not from acquire()/_lost(): the loop shuts down
                self._linger = None
                if self._users == 0 and self._transport is transport:
                    await self._leave(transport)
            raise
        # under the lock, so leave_if_idle() (a stopping gateway) waits for this close, and acquire() joins afresh
        async with self._open_lock:
            if self._linger is asyncio.current_task() and self._users == 0 and self._transport is transport:
                self._linger = None  # from here nothing cancels the close below
                await self._leave(transport)

    async def _leave(self, transport: Transport) -> None:
        """Forget the device and close its transport (the caller checked it is the current one, unused)."""
        self._transport, self._device = None, None
        self._scanners.clear()
        await _close_quietly(transport)
        logger.debug("central %s left %s", self.address, self.radio_url)

    async def add_scanner(self, token: object, listener: AdvertisementListener, active: bool) -> None:
        """Start delivering advertisements to ``listener`` (starts scanning if needed)."""
        self._scanners[token] = listener
        device = self.device
        if not device.is_scanning:
            await device.start_scanning(active=active, filter_duplicates=False)
            self._active_scan = active

    async def remove_scanner(self, token: object) -> None:
        """Stop delivering to ``token``'s listener (stops scanning when none is left)."""
        self._scanners.pop(token, None)
        if not self._scanners and self._device is not None and self._device.is_scanning:
            await self._device.stop_scanning()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        for listener in list(self._scanners.values()):
            listener(advertisement)


async def _close_quietly(transport: Transport) -> None:
    """Close a transport whose relay may be gone already (bounded: closing a dead WebSocket waits)."""
    try:
        await asyncio.wait_for(transport.close(), 5.0)
    except Exception as exc:  # noqa: BLE001 - a timeout, websockets' ConnectionClosed...: the relay is gone
        logger.debug("closing the radio transport: %r", exc)


_centrals: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SharedCentral]] = (
    weakref.WeakKeyDictionary())


def shared_central(radio_url: str) -> SharedCentral:
    """The :class:`SharedCentral` for ``radio_url`` in the running event loop."""
    loop = asyncio.get_running_loop()
    per_loop = _centrals.setdefault(loop, {})
    key = parse_radio_url(radio_url).url
    central = per_loop.get(key)
    if central is None:
        central = per_loop[key] = SharedCentral(key)
    return central
