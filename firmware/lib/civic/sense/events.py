"""Event counter with a refractory period, fed from a pin IRQ (PIR passes, lid openings).

The IRQ handler only increments an integer and wakes the sense task (``on_edge``, a
:class:`civic.hal.signal.Signal`); the sense task calls :meth:`EventCounter.poll`, which applies the refractory period: one lingering person (or
a lid flapping in the wind) counts once per ``refractory_ms``. No event time ever leaves.

Tick stamps are kept only while they are needed: ``ticks_diff`` is valid within 2**29 ms (about
6.2 days; ticks wrap at 2**30), and a stamp compared after that looks recent or in the future.
"""

import time

STAMP_MAX_MS = 1 << 28  # a stamp is forgotten by then at the latest: half the range ticks_diff can tell


class EventCounter:
    """Counts events at most once per refractory period.

    Args:
        refractory_ms: events closer than this to the last *counted* one are not counted.
        ticks_diff: tick difference function (``time.ticks_diff``; wraps at 2**30).
        on_edge: object whose ``set()`` the IRQ handler calls to wake the sense task, or None.
        keep_ms: how long :meth:`since_event_ms` must tell the time since the last activity
            (the streetlight's courtesy time; None: :data:`STAMP_MAX_MS`); after that it says
            None, as before any activity.

    :meth:`poll` must be called more often than every :data:`STAMP_MAX_MS` (it forgets the
    stamps in time).
    """

    def __init__(self, refractory_ms, ticks_diff=time.ticks_diff, on_edge=None, keep_ms=None):
        self.refractory_ms = refractory_ms
        self.keep_ms = keep_ms
        self._ticks_diff = ticks_diff
        self.edges = 0          # incremented by the IRQ handler only
        self._seen_edges = 0
        self._last_counted = None
        self.last_event_ms = None
        self.count = 0
        self.on_edge = on_edge

    def irq(self, pin=None):
        """Pin IRQ handler: record that an edge happened and wake the sense task."""
        self.edges += 1
        if self.on_edge is not None:
            self.on_edge.set()

    def poll(self, now_ms):
        """Account edges seen since the last poll; return True if there was any activity."""
        self.expire(now_ms)
        edges = self.edges
        if edges == self._seen_edges:
            return False
        self._seen_edges = edges
        self.last_event_ms = now_ms
        if self._last_counted is None or self._ticks_diff(now_ms, self._last_counted) >= self.refractory_ms:
            self.count += 1
            self._last_counted = now_ms
        return True

    def expire(self, now_ms):
        """Forget the stamps no longer needed (past the refractory period, past ``keep_ms``), so
        that none is compared after ticks wrapped (a negative difference: one that did)."""
        last = self._last_counted
        if last is not None:
            d = self._ticks_diff(now_ms, last)
            if d < 0 or d >= self.refractory_ms:
                self._last_counted = None
        last = self.last_event_ms
        if last is not None:
            d = self._ticks_diff(now_ms, last)
            keep = self.keep_ms
            if d < 0 or d >= (STAMP_MAX_MS if keep is None or keep > STAMP_MAX_MS else keep):
                self.last_event_ms = None

    def take(self):
        """Return the count since the last take and reset it (refractory timing is kept)."""
        n = self.count
        self.count = 0
        return n

    def since_event_ms(self, now_ms):
        """Milliseconds since the last activity, or None if none was seen within ``keep_ms``."""
        self.expire(now_ms)
        if self.last_event_ms is None:
            return None
        return self._ticks_diff(now_ms, self.last_event_ms)
