"""BLE transport: a bleak central that finds boards by service UUID and keeps connections to them.

Only bleak's public API is used (``BleakScanner``/``BleakClient`` with ``backend=``), so the same code
runs on BlueZ and on the simulator's virtual radio. Per connection: subscribe to TX notifications,
reassemble fragments into frames, write ACK frames fragmented to the ATT MTU to RX (write without
response). A failed or dropped connection is retried with exponential backoff per address, and
at most ``max_connections`` are open at once.

Slots are not given to whatever advertises the service UUID (:mod:`gateway.transports.ble_slots`):
with a registry, only advertisers named after a registered, non-revoked device are connected; a
link on which the ingest accepted no frame within ``auth_timeout_s`` is dropped and its address
paused, the pause doubling per such drop in a row up to 15 minutes and ending with a verified frame
(a WARNING when an address's pause starts and when it reaches the cap, not at every drop, each line
naming the address and the advertised name);
candidates are taken known-first, then least recently served, never by address. Pauses and
backoffs follow the clock given as ``monotonic`` (the simulated one under ``[sim_clock]``); the
radio's own timeouts stay in real time.
An open link is checked against the registry every :data:`LINK_CHECK_S` and closed once its device
is revoked, no longer registered, or its key is no longer the one the link authenticated with.

A scan that fails with an error of the radio stack (bleak's ``BleakError``, ``OSError``,
``TimeoutError``: no adapter, the virtual radio's relay unreachable, stopped or restarted, HCI
commands timing out, a scan that does not return) marks the link down, is logged as a WARNING at
most once per :data:`RADIO_WARN_EVERY_S`, and is retried with backoff (:data:`RADIO_RETRY_MIN_S`
doubling to :data:`RADIO_RETRY_MAX_S`); the backend re-opens the radio/adapter at the next scan.
Any other exception is a defect: it ends :meth:`BleTransport.run`, and the gateway's supervisor
logs it at ERROR with its traceback and restarts the transport.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from typing import Any, Callable

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.exc import BleakBluetoothNotAvailableError, BleakError

from gateway.config.model import BleConfig
from gateway.errors import GatewayError, TransportError
from gateway.log_limit import LogLimiter, more_since
from gateway.metrics import GatewayMetrics
from gateway.pipeline.ingest import Link
from gateway.protocol.ble_fragments import FragmentReassembler, fragment_frame
from gateway.protocol.frame import parse_frame, verify_tag
from gateway.registry import Registry
from gateway.transports.base import FrameSink
from gateway.transports.ble_slots import DropNotices, NameFilter, SlotPolicy

log = logging.getLogger(__name__)

TX_UUID = "6c3e0002-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
RX_UUID = "6c3e0003-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
WRITE_TIMEOUT_S = 5.0
# The registry's ids are re-read when it changed through this process, and at least this often
# (a `devices add` by another process).
REGISTRY_REFRESH_S = 10.0
# Every open link is checked against the registry this often, by a lookup of its device rather than
# through `changes` (which moves only for changes made through this process): a device revoked or
# re-keyed by the CLI in another process loses its link as quickly as one revoked by the admin API.
LINK_CHECK_S = 1.0
# A failed scan (radio/adapter unreachable or lost) is retried after this long, doubling up to the max.
RADIO_RETRY_MIN_S = 1.0
RADIO_RETRY_MAX_S = 30.0
# At most one WARNING per this long about an unreachable radio/adapter (the other failures at DEBUG).
RADIO_WARN_EVERY_S = 60.0
# A scan that has not returned this long after its scan interval is abandoned as a failure.
SCAN_GRACE_S = 15.0
# D-Bus's default system bus (dbus-fast, which bleak's BlueZ backend uses, reads the same).
DEFAULT_SYSTEM_BUS = "unix:path=/var/run/dbus/system_bus_socket"

def system_bus_address() -> str:
    """The D-Bus system bus bleak's BlueZ backend connects to (``DBUS_SYSTEM_BUS_ADDRESS``, else the default)."""
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS


def system_bus_missing(config: BleConfig) -> str | None:
    """For ``run --check``: why the BlueZ backend cannot work here, when its D-Bus system bus socket is not
    there (None: BLE off, the virtual radio, the socket present, or an address that cannot be checked)."""
    if not config.enabled or config.backend != "bluez":
        return None
    address = system_bus_address()
    for entry in address.split(";"):  # D-Bus tries the addresses in turn
        transport, _, params = entry.partition(":")
        keys = dict(kv.partition("=")[::2] for kv in params.split(",") if kv)
        if transport != "unix" or "path" not in keys or os.path.exists(keys["path"]):
            return None  # abstract sockets, tcp, or a socket file that is there
    return ("[ble] enabled with the BlueZ backend, but there is no D-Bus system bus at %s: BLE will not work"
            " (is dbus running, and bluetoothd?)" % address)


#: The setting that needs the ``hil`` extra (the virtual radio), as its errors name it.
VIRTUAL_BACKEND = '[ble] backend = "virtual"'


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
        from hil.sim.radio.bleak_backend import DEFAULT_LINGER_S, make_backends
        from hil.sim.radio.errors import RadioUrlError
    except ImportError as exc:
        from hil.cli.extras import extra_for, needs_extra_message  # hil ships with gateway; imports only stdlib

        missing = extra_for(exc)
        if missing is not None:  # an install without the hil extra (Bumble, websockets): say which to add
            raise TransportError(needs_extra_message(VIRTUAL_BACKEND, *missing), reason="open_failed",
                                 link="ble") from exc
        raise TransportError("virtual BLE backend unavailable: %s" % exc, reason="open_failed", link="ble") from exc
    if config.radio is None:
        raise TransportError("[ble] backend = \"virtual\" needs radio = \"ws://HOST:PORT/ROOM\"", reason="open_failed",
                             link="ble")
    try:
        # joined between scans, as an adapter stays powered (BleTransport.close leaves the radio)
        return make_backends(config.radio, linger_s=DEFAULT_LINGER_S)
    except RadioUrlError as exc:  # the config loader refuses these; a BleConfig built in code may not
        raise TransportError("[ble] radio: %s" % exc, reason="open_failed", link="ble") from exc


class BleTransport:
    """BLE central transport.

    Args:
        config: the ``[ble]`` section.
        metrics: ``ble_connected``, ``link_state{link="ble"}``, ``ble_deauthorized`` and
            ``civicedge_ble_unverified_dropped_total``.
        backends: ``(scanner_backend, client_backend)``; default from :func:`resolve_backends`.
        registry: the device registry; when given, only advertisers whose local name is a
            registered, non-revoked device id (or its shortened form) are connected, and an open
            link is closed once its device is revoked, unregistered or re-keyed. None: any
            advertiser of the service UUID (links are still dropped when nothing verifies).
        auth_timeout_s: drop a link on which the ingest accepted no frame this long after connecting;
            default ``config.auth_timeout_s``.
        policy: the slot policy (default: one for ``config.max_connections``).
        monotonic: the clock of the reconnect pauses and backoffs (:class:`SlotPolicy`): the
            gateway's monotonic clock, which under ``[sim_clock]`` is the simulated clock, so a pause
            follows the boards' time as the ACK gap hold does. The radio's own timing (connect and
            auth timeouts, scans, link checks) and the log's rate limits stay in real time.
    """

    name = "ble"

    def __init__(self, config: BleConfig, *, metrics: GatewayMetrics | None = None,
                 backends: tuple[Any, Any] | None = None, registry: Registry | None = None,
                 auth_timeout_s: float | None = None, policy: SlotPolicy | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._metrics = metrics
        self._scanner_cls, self._client_cls = backends if backends is not None else resolve_backends(config)
        self._connections: dict[str, asyncio.Task[None]] = {}
        self._clients: dict[str, BleakClient] = {}
        self._policy = policy if policy is not None else SlotPolicy(config.max_connections)
        self._monotonic = monotonic
        self._registry = registry
        self._names: NameFilter | None = None
        self._names_changes = -1
        self._names_read = 0.0
        self.auth_timeout_s = config.auth_timeout_s if auth_timeout_s is None else auth_timeout_s
        self._dropped = metrics.ble_unverified_dropped if metrics is not None else None
        self.unverified_dropped = 0
        self.deauthorized = 0
        self._drop_notices = DropNotices(self._policy.pause_max_s, time.monotonic)
        self._ignored_logged: set[str] = set()
        self._msg = 0
        self._radio_log = LogLimiter(RADIO_WARN_EVERY_S, time.monotonic)
        self._radio_down_since: float | None = None
        self._radio_warned = False
        self.problem: str | None = None
        """Why the link is down (the radio/adapter cannot be reached, or a scan failed), for /healthz; None
        while it scans."""

    @property
    def connected(self) -> int:
        """Number of open connections."""
        return len(self._clients)

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.ble_connected.set(len(self._clients))

    def _set_state(self, up: bool) -> None:
        if self._metrics is not None:
            self._metrics.set_link("ble", up)

    async def run(self, sink: FrameSink) -> None:
        """Scan and connect until cancelled; a failed scan is retried with backoff (module docstring)."""
        self._set_state(False)
        retry = RADIO_RETRY_MIN_S
        try:
            while True:
                # asyncio.timeout, not wait_for: wait_for of Python 3.11 can lose a cancel that arrives
                # as the scan completes, and the transport would then never stop.
                limit = self._config.scan_interval_s + SCAN_GRACE_S
                deadline = asyncio.timeout(limit)
                try:
                    async with deadline:
                        found = await BleakScanner.discover(
                            timeout=self._config.scan_interval_s, service_uuids=[self._config.service_uuid],
                            backend=self._scanner_cls, return_adv=True,
                        )
                except (BleakError, OSError, TimeoutError) as exc:  # the radio stack's failures: down, told, retried
                    # anything else is a defect: it ends run() and reaches the supervisor (ERROR, restart)
                    _raise_lost_cancel()  # a stop, not a failure: no retry
                    self._set_state(False)
                    self._radio_failed(exc, retry, limit_s=limit if deadline.expired() else None)
                    await asyncio.sleep(retry)
                    retry = min(RADIO_RETRY_MAX_S, retry * 2)
                    continue
                _raise_lost_cancel()
                retry = RADIO_RETRY_MIN_S
                self._radio_works()
                self._set_state(True)
                now = time.monotonic()
                names = self._known_names(now)
                candidates: dict[str, tuple[BLEDevice, str | None]] = {}
                for address, (device, adv) in found.items():
                    if self._config.service_uuid not in [u.lower() for u in adv.service_uuids]:
                        continue
                    local_name = adv.local_name or device.name
                    if names is not None and not names.admits(local_name):
                        self._ignore(address, local_name)
                        continue
                    candidates[address] = (device, local_name)
                pause_now = self._monotonic()
                for address in self._policy.choose(candidates, open_links=self._connections.keys(), now=pause_now):
                    self._policy.attempt(address, pause_now)
                    task = asyncio.create_task(self._serve(*candidates[address], sink), name="ble-%s" % address)
                    self._connections[address] = task
                    task.add_done_callback(self._forget(address))
                if len(self._connections) >= self._config.max_connections:
                    await asyncio.sleep(self._config.scan_interval_s)
        finally:
            self._set_state(False)
            await self.close()

    def _radio_failed(self, exc: BaseException, retry_s: float, *, limit_s: float | None = None) -> None:
        """Record and log a failed scan: a WARNING at most once per RADIO_WARN_EVERY_S, else DEBUG.

        ``limit_s``: the scan was given up after this long (it did not return).
        """
        now = time.monotonic()
        if self._radio_down_since is None:
            self._radio_down_since = now
        if limit_s is not None:
            why = "the scan did not return within %g s" % round(limit_s, 2)
        else:
            # bleak's errors may carry (message, reason): the message is what an operator reads
            why = exc.args[0] if len(exc.args) > 1 and isinstance(exc.args[0], str) else str(exc)
            why = why or type(exc).__name__
        # No adapter (or the virtual radio's relay gone) and timeouts: the radio cannot be reached.
        # Anything else bleak or the OS reports is a scan that failed on a radio that answered.
        if isinstance(exc, (BleakBluetoothNotAvailableError, TimeoutError)):
            self.problem = "cannot reach the BLE radio/adapter (%s)" % why
        elif self._config.backend == "bluez" and isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
            # bleak's D-Bus connect names no path: "[Errno 2] No such file or directory" alone said nothing
            self.problem = ("cannot reach BlueZ: no D-Bus system bus at %s (%s: %s; is dbus running, and"
                            " bluetoothd?)" % (system_bus_address(), type(exc).__name__, why))
        else:
            self.problem = "BLE scan failed (%s: %s)" % (type(exc).__name__, why)
        more = self._radio_log.allow()
        down_for = now - self._radio_down_since
        if more is None:
            log.debug("BLE: %s for %.0f s; retrying in %.0f s", self.problem, down_for, retry_s)
            return
        self._radio_warned = True
        log.warning("BLE: %s%s; retrying in %.0f s, no BLE device is served until then%s", self.problem,
                    " for %.0f s" % down_for if down_for >= 1 else "", retry_s, more_since(more, "failed attempt(s)"))

    def _radio_works(self) -> None:
        """A scan succeeded: say so once after an outage (WARNING if the outage was warned about)."""
        if self._radio_down_since is None:
            return
        down_for = time.monotonic() - self._radio_down_since
        log.log(logging.WARNING if self._radio_warned else logging.INFO,
                "BLE: the radio/adapter works again after %.0f s; scanning", down_for)
        self._radio_down_since, self._radio_warned, self.problem = None, False, None

    def _known_names(self, now: float) -> NameFilter | None:
        """The registry's non-revoked ids (None without a registry), re-read when it may have changed."""
        registry = self._registry
        if registry is None:
            return None
        changes = registry.changes
        if self._names is None or changes != self._names_changes or now - self._names_read >= REGISTRY_REFRESH_S:
            try:
                self._names = NameFilter(r.id for r in registry.list() if not (r.revoked or r.retired))
                self._names_changes, self._names_read = changes, now
            except (sqlite3.Error, GatewayError) as exc:  # keep the last list; never stop scanning
                log.warning("BLE: cannot read the device registry (%s); keeping the last list of %d device(s)",
                            exc, len(self._names) if self._names is not None else 0)
                self._names_read = now
                if self._names is None:
                    self._names = NameFilter(())
        return self._names

    def _ignore(self, address: str, name: str | None) -> None:
        if address in self._ignored_logged:
            return
        if len(self._ignored_logged) >= 1024:
            self._ignored_logged.clear()
        self._ignored_logged.add(address)
        log.debug("BLE %s advertises the service as %r, not a registered device: not connected", address, name)

    def _count_drop(self, address: str, name: str | None, delay: float) -> None:
        """Count a link dropped without a verified frame; WARNING when the device's pause starts or
        reaches the cap (:class:`DropNotices`), the other drops at DEBUG."""
        self.unverified_dropped += 1
        if self._dropped is not None:
            self._dropped.inc()
        strikes = self._policy.strikes(address)
        told = self._drop_notices.dropped(address, delay)  # keyed as the pause is: by address
        if told is None:
            log.debug("BLE dropped %s (%s): no verified frame within %.1f s (%d such drop(s) in a row); "
                      "not reconnected for %.0f s", address, name, self.auth_timeout_s, strikes, delay)
            return
        notice, held = told
        cap = self._policy.pause_max_s
        if notice == "start":
            log.warning("BLE dropped %s (%s): no frame from it verified within %.1f s of connecting; not reconnected "
                        "for %.0f s, doubling per such drop up to %.0f s until a frame from it verifies. Likely cause: "
                        "it sends its frames over another link (a streetlight's UART, to this gateway or another) or "
                        "has none to send; harmless for its data, which the board keeps until a link acknowledges "
                        "it. Its next such drops at DEBUG, one more WARNING if its pause reaches the cap%s",
                        address, name, self.auth_timeout_s, delay, cap, more_since(held, "such drop(s) at DEBUG"))
        else:
            log.warning("BLE dropped %s (%s) again: no frame from it verified on %d links in a row; now reconnected "
                        "once every %.0f s (the cap) until a frame from it verifies. Likely cause: it sends its frames "
                        "over another link (its UART) or has none to send; harmless for its data. Its next such drops "
                        "at DEBUG%s", address, name, strikes, delay, more_since(held, "such drop(s) at DEBUG"))

    def _deauthorized(self, name: str | None, ack: bytes | None) -> tuple[str, str] | None:
        """Why the registry no longer vouches for a link: ``(reason, device id)``, or None to keep it.

        ``ack`` is the latest ACK the ingest sent on the link (None: no frame verified yet). It names
        the device and is signed with the key its frame verified with, so the link stays only while
        that device is registered, not revoked, and that key is still its registered key. Before any
        frame verified, the advertised ``name`` must still be admitted. A registry that cannot be read
        closes nothing.
        """
        registry = self._registry
        if registry is None:
            return None
        try:
            if ack is None:
                names = self._known_names(time.monotonic())
                if not name or names is None or names.admits(name):
                    return None
                record = registry.lookup(name)
                if record is not None and not (record.revoked or record.retired):
                    return None  # a shortened name of a revoked id, admitted at connect; the auth timeout holds
                return ("unknown_device" if record is None else "revoked" if record.revoked else "retired"), name
            frame = parse_frame(ack)
            record = registry.lookup(frame.device_id)
            if record is None:
                return "unknown_device", frame.device_id
            if record.revoked:
                return "revoked", frame.device_id
            if record.retired:  # its board left this gateway: the link would hold it from the one serving it now
                return "retired", frame.device_id
            try:
                key = registry.key(frame.device_id)
            except GatewayError:  # key file gone or unreadable: no frame of the device can verify
                return "key_changed", frame.device_id
            return None if verify_tag(frame, key) else ("key_changed", frame.device_id)
        except (sqlite3.Error, GatewayError) as exc:
            log.debug("BLE: cannot check a link against the device registry (%s); kept", exc)
            return None

    def _count_deauthorized(self, address: str, reason: str, device_id: str, delay: float) -> None:
        """Count and log a link closed because the registry no longer vouches for its device."""
        self.deauthorized += 1
        if self._metrics is not None:
            self._metrics.ble_deauthorized.labels(reason).inc()
        if reason == "key_changed":
            log.warning("BLE closed the link to %s: the key of device %s is not the one the link authenticated "
                        "with; tried again in %.0f s, it must then authenticate with the new key",
                        address, device_id, delay)
        else:
            log.warning("BLE closed the link to %s: device %s is %s; it is not connected again", address, device_id,
                        {"revoked": "revoked", "retired": "retired (`civicedge gateway devices reinstate` takes it "
                         "back)"}.get(reason, "not a registered device"))

    def _forget(self, address: str) -> Callable[["asyncio.Task[None]"], None]:
        def done(_task: "asyncio.Task[None]") -> None:
            self._connections.pop(address, None)

        return done

    async def _serve(self, device: BLEDevice, name: str | None, sink: FrameSink) -> None:
        address = device.address
        link_name = "ble:%s" % address
        reassembler = FragmentReassembler()
        gone = asyncio.Event()
        verified = asyncio.Event()
        client = BleakClient(device, disconnected_callback=lambda _c: gone.set(), backend=self._client_cls,
                             timeout=self._config.connect_timeout_s)
        started = time.monotonic()
        unverified_drop = False
        deauthorized: tuple[str, str] | None = None
        last_ack: bytes | None = None  # the device and key this link authenticated with (see _deauthorized)
        try:
            await client.connect()
            connected_at = time.monotonic()
            self._clients[address] = client
            self._gauge()
            mtu = max(23, int(client.mtu_size))
            lock = asyncio.Lock()

            def fresh() -> None:
                # A report from this link was newly stored: its tag verified with the device's key and
                # it was no replay of a stored frame (an ACK also answers those). That authenticates it.
                if not verified.is_set():
                    verified.set()
                    self._policy.verified(address)
                    if self._drop_notices.verified(address):
                        log.info("BLE %s (%s) delivered a verified frame: its reconnect pause is over", address, name)

            async def send(frame: bytes) -> None:
                # The ingest answers on a link only for a frame whose tag verified (an ACK, after the
                # commit): the latest one names the device and key the link speaks for.
                nonlocal last_ack
                last_ack = frame
                async with lock:  # fragments of two ACKs must not interleave
                    self._msg = (self._msg + 1) & 0xFF
                    try:
                        for frag in fragment_frame(frame, mtu, self._msg):
                            async with asyncio.timeout(WRITE_TIMEOUT_S):  # not wait_for: see run()
                                await client.write_gatt_char(RX_UUID, frag, response=False)
                    except asyncio.TimeoutError as exc:
                        raise TransportError("write to %s timed out" % address, reason="timeout",
                                             link=link_name) from exc
                    except (BleakError, OSError) as exc:
                        raise TransportError("write to %s failed: %s" % (address, exc), reason="disconnected",
                                             link=link_name) from exc

            link = Link(name=link_name, kind="ble", send=send, fresh=fresh)

            def on_notify(_char: Any, data: bytearray) -> None:
                for item in reassembler.feed(bytes(data)):
                    sink(item, link)

            await client.start_notify(TX_UUID, on_notify)
            log.info("BLE connected to %s (%s), ATT MTU %d", address, name, mtu)
            auth_deadline = connected_at + self.auth_timeout_s
            while not gone.is_set():
                now = time.monotonic()
                if verified.is_set():
                    await _first_of(gone, deadline=now + LINK_CHECK_S)
                elif now >= auth_deadline:
                    unverified_drop = True
                    return
                else:
                    await _first_of(verified, gone, deadline=min(auth_deadline, now + LINK_CHECK_S))
                if gone.is_set():
                    break
                deauthorized = self._deauthorized(name, last_ack)
                if deauthorized is not None:
                    # Its verified frames vouch for nothing now: a stranger's backoff and no kept slot.
                    self._policy.distrust(address)
                    self._names_changes = -1  # re-read the names before the next choice of candidates
                    return
            log.info("BLE %s (%s) disconnected", address, name)
        except (BleakError, OSError, asyncio.TimeoutError, TransportError) as exc:
            log.info("BLE connection to %s (%s) failed: %s", address, name, exc)
        except Exception as exc:  # noqa: BLE001 - a radio stack's undocumented error must not end the task unseen
            log.warning("BLE connection to %s (%s) failed (%s: %s)", address, name, type(exc).__name__, exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
        finally:
            reassembler.reset()
            self._clients.pop(address, None)
            self._gauge()
            delay = self._policy.ended(address, self._monotonic(), up_for=time.monotonic() - started,
                                       unverified_drop=unverified_drop or deauthorized is not None)
            if unverified_drop:
                self._count_drop(address, name, delay)
            elif deauthorized is not None:
                self._count_deauthorized(address, *deauthorized, delay)
            if client.is_connected:
                try:
                    async with asyncio.timeout(5.0):
                        await client.disconnect()
                except (BleakError, OSError, asyncio.TimeoutError):
                    pass

    async def close(self) -> None:
        """Cancel every connection task, disconnect, and leave the virtual radio (its central lingers)."""
        tasks = list(self._connections.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._connections.clear()
        self._clients.clear()
        self._gauge()
        # The virtual radio's central stays joined a while after the last scan (as an adapter stays
        # powered on): a stopping transport leaves it now, so nothing of it outlives the gateway.
        leave_radio = getattr(self._scanner_cls, "leave_radio", None)
        if leave_radio is not None:
            await leave_radio()


def _raise_lost_cancel() -> None:
    """Raise CancelledError if this task was cancelled but the scan returned or failed instead.

    The radio stack can swallow a cancel: Python 3.11's ``asyncio.wait_for`` returns its inner call's
    result (or raises its error) when the cancel arrives as that call completes, and the virtual
    radio's and bleak's connects use it. The scan then ends as a radio failure (``cannot reach the
    virtual radio``) with the cancel consumed, the loop would retry with backoff forever, and
    whatever cancelled the task (a stopping gateway, ``asyncio.run`` cancelling what is left) would
    wait for it forever. ``Task.cancelling()`` still counts the request: it is honoured here.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling() > 0:
        raise asyncio.CancelledError()


async def _first_of(*events: asyncio.Event, deadline: float) -> bool:
    """Wait until one of ``events`` is set; False if none is by ``deadline`` (monotonic)."""
    if any(event.is_set() for event in events):
        return True
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=max(0.0, deadline - time.monotonic()),
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)
