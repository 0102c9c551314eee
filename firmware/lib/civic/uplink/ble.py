"""BLE GATT link (docs/protocol.md §5) on MicroPython's low-level ``bluetooth`` API.

The ``bluetooth.BLE()`` object and the ``bluetooth.UUID`` constructor are injected, so the
same code runs on an ESP32 and on the simulator's virtual radio. The device registers the
civicedge service (TX: notify + read, RX: write / write-without-response), advertises the
service UUID (and its device id as the complete local name in the scan response), sends
frames as fragments sized to the negotiated MTU, and reassembles gateway writes on RX.
"""

import struct
import time

from micropython import const

from civic.hal.signal import Signal
from civic.wire import ble_frag
from civic.wire.frame import MAX_LEN

try:
    from typing import TYPE_CHECKING
except ImportError:  # MicroPython has no typing module; the annotations are for pyright only
    TYPE_CHECKING = False
if TYPE_CHECKING:
    import bluetooth

SERVICE_UUID = "6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
TX_UUID = "6c3e0002-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
RX_UUID = "6c3e0003-4a5e-4c1b-9b9e-0c1c1ce0ed9e"

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
_FLAG_READ = const(0x0002)
_FLAG_WRITE_NO_RESPONSE = const(0x0004)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)
_RX_QUEUE_MAX = const(64)
# Any central may connect (no pairing): what its writes may hold of the heap is bounded. Writes
# wait for the link task in a queue of at most RX_QUEUE_BYTES (two largest frames); beyond, they
# are dropped (a gateway sends the frame again). A central that writes more than UNVERIFIED_MAX
# bytes without one frame that verifies is disconnected, freeing the single connection.
RX_QUEUE_BYTES = 2 * MAX_LEN
UNVERIFIED_MAX = 4 * MAX_LEN
_ADV_INTERVAL_US = const(250000)
_MAX_NAME = const(29)
# A central must write one fresh frame that verifies under the device key (the gateway's ACK to
# the first report it receives; a CONFIG newer than the applied one) within this long of the first
# frame notified to it, else it is disconnected and the board advertises again: a central that
# connects and does nothing would hold the board's one connection for ever. The subscription that
# comes first at a gateway is invisible here (NimBLE handles the CCCD and MicroPython raises no
# event for it). Timed from the first frame, not the connect: a gateway waiting for a board with
# nothing to send is left alone (it drops the link itself after its [ble] auth_timeout_s,
# docs/ble.md §8). Fresh, because a recorded ACK or CONFIG replayed by anyone still verifies: an
# ACK counts if it removed an outbox entry or covers a frame notified on this connection
# (Cursor.answered), a CONFIG only if applied.
HANDSHAKE_MS = 30000
PUMP_LIMIT = 4  # frames notified per wake-up before yielding to the other tasks
IDLE_MS = 10000  # longest sleep with nothing to do (a lost event costs at most this)


def uuid128_le(text):
    """Return the 16 little-endian bytes of a 128-bit UUID string (advertising order)."""
    hexdigits = text.replace("-", "")
    if len(hexdigits) != 32:
        raise ValueError("ble: not a 128-bit UUID: " + text)
    raw = bytes(int(hexdigits[i:i + 2], 16) for i in range(0, 32, 2))
    return bytes(reversed(raw))


def advertising_payloads(device_id):
    """Return ``(adv_data, resp_data)``: flags + 128-bit service UUID; the device id as name.

    Ids longer than 29 bytes do not fit a scan response: they are sent as a shortened local
    name (AD type 0x08) of the first 29 bytes; the frames carry the full id anyway.
    """
    adv = struct.pack("BBB", 2, 0x01, 0x06) + bytes((17, 0x07)) + uuid128_le(SERVICE_UUID)
    name = device_id.encode()
    ad_type = 0x09  # complete local name
    if len(name) > _MAX_NAME:  # a 31-byte scan response holds 29 name bytes
        name = name[:_MAX_NAME]
        ad_type = 0x08  # shortened local name
    resp = bytes((len(name) + 1, ad_type)) + name
    return adv, resp


class BleLink:
    """GATT peripheral carrying frames for a :class:`Session`.

    Args:
        ble: a ``bluetooth.BLE()`` object.
        uuid: the ``bluetooth.UUID`` constructor.
        session: :class:`civic.uplink.session.Session`.
        poll_ms: retry period after the stack refused a notification.
        idle_ms: longest sleep with nothing to do; BLE events and new frames wake the task.
        preferred_mtu: MTU offered in the exchange (``ble.config(mtu=...)``).
        handshake_ms: a central with no fresh verified frame this long after the first frame
            notified to it is disconnected.
        ticks_ms: millisecond tick source (``time.ticks_ms``; compared with ``time.ticks_diff``).

    Attributes:
        cur: this link's :class:`civic.uplink.session.Cursor` (its own send position).
        conn: connection handle of the gateway, or None.
        mtu: negotiated ATT MTU (23 until an exchange happens).
        reassembler: :class:`civic.wire.ble_frag.Reassembler` for RX writes.
        notify_errors: notifications the stack refused (frame retried later).
        rx_dropped: RX writes dropped because the queue was full (or the central was being
            disconnected).
        kicked: centrals disconnected for writing ``UNVERIFIED_MAX`` bytes with no verified frame.
        idle_cut: centrals disconnected for no fresh verified frame within ``handshake_ms``.
        proven: the current central wrote a fresh frame that verified (never cut for idling): an
            ACK that was no replay (``cur.answered``) or a CONFIG that was applied.
    """

    def __init__(self, ble: "bluetooth.BLE", uuid, session, poll_ms=20, preferred_mtu=247, idle_ms=IDLE_MS,
                 handshake_ms=HANDSHAKE_MS, ticks_ms=time.ticks_ms):
        self.ble = ble
        self.session = session
        self.poll_ms = poll_ms
        self.idle_ms = idle_ms
        self.wake = Signal()
        session.watch(self.wake)
        self.running = False
        self.conn = None
        self.mtu = ble_frag.MIN_MTU
        self.reassembler = ble_frag.Reassembler()
        self.notify_errors = 0
        self._msg = 0
        self.rx_dropped = 0
        self.kicked = 0
        self.idle_cut = 0
        self.handshake_ms = handshake_ms
        self.ticks_ms = ticks_ms
        self.proven = False
        self._since = None  # tick of the first frame notified to an unproven central (or its last cut)
        self._rx_queue = []
        self._rx_bytes = 0  # bytes in _rx_queue
        self._unverified = 0  # bytes this central wrote since its last frame that verified
        ble.active(True)
        try:
            ble.config(mtu=preferred_mtu)
        except (ValueError, OSError):
            pass  # stack without a settable MTU: stay at what the central negotiates
        ble.irq(self._irq)
        svc = (uuid(SERVICE_UUID), (
            (uuid(TX_UUID), _FLAG_READ | _FLAG_NOTIFY),
            (uuid(RX_UUID), _FLAG_WRITE | _FLAG_WRITE_NO_RESPONSE),
        ))
        ((self.tx_handle, self.rx_handle),) = ble.gatts_register_services((svc,))
        ble.gatts_set_buffer(self.rx_handle, 512)
        self.cur = session.cursor()  # this link's own send position (taken once the radio is up)
        self._adv, self._resp = advertising_payloads(session.device_id)
        self.advertise()

    def advertise(self):
        """Start connectable advertising (service UUID, name in the scan response)."""
        self.ble.gap_advertise(_ADV_INTERVAL_US, self._adv, resp_data=self._resp, connectable=True)

    def _irq(self, event, data):
        # runs in the BLE stack's (scheduled) callback: record only, work happens in step()
        if event == _IRQ_CENTRAL_CONNECT:
            if self.conn is None:
                self.conn = data[0]
                self.mtu = ble_frag.MIN_MTU
                self.reassembler.reset()
                self._unverified = 0
                self.proven = False
                self._since = None
                self.cur.restart()
        elif event == _IRQ_CENTRAL_DISCONNECT:
            if data[0] == self.conn:
                self.conn = None
                self.reassembler.reset()
                self._rx_queue = []
                self._rx_bytes = 0
                self._unverified = 0
                self._since = None
                self.advertise()
        elif event == _IRQ_GATTS_WRITE:
            conn, handle = data[0], data[1]
            if conn == self.conn and handle == self.rx_handle:  # another central's writes: ignored
                data = self.ble.gatts_read(handle)
                n = len(data)
                self._unverified += n
                if (self._unverified > UNVERIFIED_MAX or len(self._rx_queue) >= _RX_QUEUE_MAX
                        or self._rx_bytes + n > RX_QUEUE_BYTES):
                    self.rx_dropped += 1
                else:
                    self._rx_queue.append(data)
                    self._rx_bytes += n
        elif event == _IRQ_MTU_EXCHANGED:
            if data[0] == self.conn:
                self.mtu = max(ble_frag.MIN_MTU, min(data[1], 512))
        self.wake.set()

    def poll(self):
        """Reassemble queued RX writes and hand complete frames to the session.

        Disconnects a central that wrote over ``UNVERIFIED_MAX`` bytes with no frame that verifies,
        and one that wrote no fresh frame that verifies within ``handshake_ms`` of the first frame
        notified to it (it then advertises again: the disconnect event). A replayed ACK or stale
        CONFIG verifies (it ends a flood count) but is not fresh: it does not stop the timer.
        """
        # take the whole queue at once (no call in between: the IRQ cannot run there)
        queue, self._rx_queue, self._rx_bytes = self._rx_queue, [], 0
        for data in queue:
            frame = self.reassembler.feed(data)
            if frame is None:
                continue
            r = self.session.handle(frame, self.cur)
            if r != "bad":
                self._unverified = 0  # parsed, tag verified, our id
                if r == "config" or self.cur.answered:
                    self.proven = True  # the protocol started: never cut for idling
                    self._since = None
        conn = self.conn
        if conn is None:
            return
        since = self._since
        if self._unverified > UNVERIFIED_MAX:
            self._unverified = 0  # once per flood; the disconnect event resets the rest
            self.kicked += 1
            self._disconnect(conn)
        elif since is not None and self._handshake_left(since) <= 0:
            self._since = self.ticks_ms()  # once per timeout: cut again only if the event never comes
            self.idle_cut += 1
            self._disconnect(conn)

    def _handshake_left(self, since):
        # ticks_diff: right across the tick counter's wrap (checked at least every idle_ms)
        return self.handshake_ms - time.ticks_diff(self.ticks_ms(), since)

    def _disconnect(self, conn):
        try:
            self.ble.gap_disconnect(conn)
        except OSError:
            pass  # gone already: the disconnect event follows

    def pump(self, limit=PUMP_LIMIT):
        """Notify up to ``limit`` due frames to the connected gateway; return how many."""
        sent = 0
        while sent < limit and self.conn is not None:
            item = self.cur.next_frame()
            if item is None:
                break
            s, data = item
            frags = ble_frag.fragment(data, self.mtu, self._msg)
            self._msg = (self._msg + 1) & 0xFF  # a retry uses a new counter
            try:
                for f in frags:
                    # the 1.27 stub omits conn_handle; the device API is (conn, handle, data)
                    self.ble.gatts_notify(self.conn, self.tx_handle, f)  # pyright: ignore[reportCallIssue]
            except OSError:
                self.notify_errors += 1
                break
            self.cur.mark_sent(s)
            if not self.proven and self._since is None:
                self._since = self.ticks_ms()  # it has something to answer from now
            sent += 1
        return sent

    def _wait_ms(self, sent, refused):
        if self.conn is None:
            return self.idle_ms  # a connect wakes the task
        if refused:
            return self.poll_ms  # the stack's buffers are full: retry soon
        if sent >= PUMP_LIMIT:
            return 0
        wait = self.cur.resend_in_ms(self.idle_ms)
        since = self._since
        if since is not None:
            wait = max(1, min(wait, self._handshake_left(since)))  # wake to cut an idle central
        return wait

    async def run(self):
        """Until :meth:`stop`: process writes, notify due frames, sleep until woken or due."""
        self.running = True
        while self.running:
            self.poll()
            errors = self.notify_errors
            sent = self.pump()
            await self.wake.wait_ms(self._wait_ms(sent, self.notify_errors != errors))

    def stop(self):
        """Make :meth:`run` return (at once if it is sleeping)."""
        self.running = False
        self.wake.set()
