"""Event counter with a refractory period, fed from a pin IRQ (PIR passes, lid openings).

The IRQ handler only increments an integer and wakes the sense task (``on_edge``, a
:class:`civic.hal.signal.Signal`); the sense task calls :meth:`EventCounter.poll`, which applies the refractory period: one lingering person (or
a lid flapping in the wind) counts once per ``refractory_ms``. No event time ever leaves.
"""

import time


class EventCounter:
    """Counts events at most once per refractory period.

    Args:
        refractory_ms: events closer than this to the last *counted* one are not counted.
        ticks_diff: tick difference function (``time.ticks_diff``; wraps at 2**30).
        on_edge: object whose ``set()`` the IRQ handler calls to wake the sense task, or None.
    """

    def __init__(self, refractory_ms, ticks_diff=time.ticks_diff, on_edge=None):
        self.refractory_ms = refractory_ms
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
        edges = self.edges
        if edges == self._seen_edges:
            return False
        self._seen_edges = edges
        self.last_event_ms = now_ms
        if self._last_counted is None or self._ticks_diff(now_ms, self._last_counted) >= self.refractory_ms:
            self.count += 1
            self._last_counted = now_ms
        return True

    def take(self):
        """Return the count since the last take and reset it (refractory timing is kept)."""
        n = self.count
        self.count = 0
        return n

    def since_event_ms(self, now_ms):
        """Milliseconds since the last activity, or None if none was seen."""
        if self.last_event_ms is None:
            return None
        return self._ticks_diff(now_ms, self.last_event_ms)
