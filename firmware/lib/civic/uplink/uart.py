"""Serial link: frames COBS-encoded and delimited by 0x00 (docs/protocol.md §5).

The UART object is injected (``machine.UART`` on the board, the simulator's UART in sim):
it needs ``write(bytes)``, ``read(n)`` and ``any()``. The task sleeps until the UART's RX-idle
interrupt or the session (a new frame, a re-send deadline) wakes it; a UART without ``irq``
is polled every ``poll_ms`` instead.
"""

from civic.hal.signal import Signal
from civic.wire import cobs
from civic.wire.frame import MAX_LEN

try:
    from typing import TYPE_CHECKING
except ImportError:  # MicroPython has no typing module; the annotations are for pyright only
    TYPE_CHECKING = False
if TYPE_CHECKING:
    import machine

# a COBS-encoded max frame is MAX_LEN + MAX_LEN//254 + 1 bytes; anything longer is garbage
MAX_CHUNK = MAX_LEN + MAX_LEN // 254 + 2
PUMP_LIMIT = 8  # frames sent per wake-up before yielding to the other tasks
IDLE_MS = 10000  # longest sleep with nothing to do (a lost interrupt costs at most this)


class UartLink:
    """COBS/0x00 framing over an injected UART, driving a :class:`Session`.

    Attributes:
        cur: this link's :class:`civic.uplink.session.Cursor` (its own send position).
        cobs_errors: chunks dropped because they failed to COBS-decode or were too long.
    """

    def __init__(self, uart: "machine.UART", session, poll_ms=20, idle_ms=IDLE_MS):
        self.uart = uart
        self.session = session
        self.poll_ms = poll_ms
        self.idle_ms = idle_ms
        self.cur = session.cursor()  # this link's own send position
        self.wake = Signal()
        session.watch(self.wake)
        self.running = False
        self.cobs_errors = 0
        self._rx = bytearray()
        self._skipping = False  # inside an over-long chunk: drop until the next 0x00

    def feed(self, data):
        """Split received bytes on 0x00 and hand each decoded frame to the session.

        If the session raises for a frame (a MemoryError), the rest of ``data`` is still split,
        so the next frame is not lost or corrupted, and the first exception is raised at the end.
        """
        data = bytes(data)
        start = 0
        n = len(data)
        err = None
        while start < n:
            end = data.find(b"\x00", start)
            if end < 0:
                self._append(data[start:])
                break
            try:
                self._append(data[start:end])
                self._chunk_done()
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the rest of data
                # a MemoryError while slicing or appending leaves part of this chunk: drop it, or
                # it would be glued to the next one
                self._rx = bytearray()
                self._skipping = False
                if err is None:
                    err = exc
            start = end + 1
        if err is not None:
            raise err

    def _append(self, part):
        if self._skipping or not part:
            return
        self._rx.extend(part)
        if len(self._rx) > MAX_CHUNK:  # no delimiter in sight: garbage, resync at the next 0x00
            self.cobs_errors += 1
            self._rx = bytearray()
            self._skipping = True

    def _chunk_done(self):
        rx, self._rx = self._rx, bytearray()  # cleared first: a handler that raises (MemoryError)
        if self._skipping:                    # must not leave this chunk before the next one
            self._skipping = False
        elif rx:
            try:
                frame = cobs.decode(rx)
            except ValueError:
                self.cobs_errors += 1
            else:
                self.session.handle(frame, self.cur)

    def poll(self):
        """Read whatever the UART has buffered and process it (non-blocking)."""
        n = self.uart.any()
        if n:
            data = self.uart.read(n)
            if data:
                self.feed(data)

    def _on_rx(self, uart=None):
        self.wake.set()

    def hook_rx(self):
        """Wake on the UART's RX-idle interrupt; return False if this UART has none."""
        trigger = getattr(self.uart, "IRQ_RXIDLE", None)
        if trigger is None or not hasattr(self.uart, "irq"):
            return False
        self.uart.irq(self._on_rx, trigger)
        return True

    def pump(self, limit=PUMP_LIMIT):
        """Send up to ``limit`` due frames; return how many were sent."""
        sent = 0
        while sent < limit:
            item = self.cur.next_frame()
            if item is None:
                break
            s, data = item
            self.uart.write(cobs.encode(data) + b"\x00")
            self.cur.mark_sent(s)
            sent += 1
        return sent

    async def run(self):
        """Until :meth:`stop`: receive, send due frames, sleep until woken or a re-send is due."""
        self.cur.restart()
        self.running = True
        idle = self.idle_ms if self.hook_rx() else self.poll_ms
        while self.running:
            self.poll()
            wait = 0 if self.pump() >= PUMP_LIMIT else self.cur.resend_in_ms(idle)
            await self.wake.wait_ms(wait)

    def stop(self):
        """Make :meth:`run` return (at once if it is sleeping)."""
        self.running = False
        self.wake.set()
