"""A simulated pin whose level follows the simulated clock, for the bin simulator's scripts (real MicroPython).

The bin's lid and tilt pins wake only a sleeping chip; a change while the chip is up is a level the firmware may
poll, not a wake of its own (``test_bin_fire_radio.SIM`` refuses a ``lid``/``tip`` event inside a wake). The tests
of such polling (a second lid opening during a hold, a tilt while awake) put this pin in the SIM's ``PRE``.
"""

from __future__ import annotations

from typing import Sequence

# MicroPython source: FakePin (test_apps_support), clock and START are the SIM's
CLOCK_PIN = """class ClockPin(FakePin):
    def __init__(self, high):
        FakePin.__init__(self, 0)
        self.high = high                   # [from, to) in ms after START: the pin reads 1, else 0
    def value(self, v=None):
        t = clock.time_ms() - START * 1000
        return 1 if any(a <= t < b for a, b in self.high) else 0
"""


def clock_pin(name: str, high: Sequence[tuple[int, int]]) -> str:
    """MicroPython lines that make ``hw.<name>`` a pin reading 1 during each ``[from, to)`` of ``high`` (ms after
    the SIM's START, on its simulated clock) and 0 otherwise; for the SIM's ``PRE``.

    Raises:
        ValueError: ``name`` is not a Python identifier, or an interval of ``high`` is not two whole ms in order.
    """
    if not name.isidentifier():
        raise ValueError("a pin name must be an identifier (hw.<name>), got %r" % name)
    intervals = [tuple(interval) for interval in high]
    for interval in intervals:
        if len(interval) != 2 or not all(isinstance(ms, int) for ms in interval) or interval[0] > interval[1]:
            raise ValueError("an interval must be (from_ms, to_ms), whole ms with from <= to, got %r" % (interval,))
    return CLOCK_PIN + "hw.%s = ClockPin(%r)\n" % (name, intervals)
