"""Unix time on the device clock, whatever the port's epoch.

MicroPython ports count from 1970 or from 2000 depending on the port and version; the wire
protocol uses unix seconds. ``time.time()`` may also return a float (the wasm port), so it is
truncated to an int here and nowhere else.
"""

import time

EPOCH_2000 = 946684800
VALID_AFTER = 1704067200  # 2024-01-01: a clock before this was never synced


def _epoch_offset():
    return 0 if time.gmtime(0)[0] == 1970 else EPOCH_2000


class Clock:
    """Device clock in unix seconds, settable through ``machine.RTC``.

    Args:
        rtc: a ``machine.RTC()`` object (None: the clock cannot be set).
    """

    def __init__(self, rtc=None):
        self.rtc = rtc
        self.offset = _epoch_offset()

    def time(self):
        """Current unix time in whole seconds."""
        return int(time.time()) + self.offset

    def time_ms(self):
        """Current unix time in milliseconds (``time.time_ns``: the RTC to the microsecond on an
        ESP32). A timer is re-armed from this so that its wake lands on a whole second whatever
        the instant it was armed at (docs/privacy.md, lid openings)."""
        return time.time_ns() // 1000000 + self.offset * 1000

    def valid(self):
        """Whether the clock has been set (by the gateway's ACK time sync)."""
        return self.time() >= VALID_AFTER

    def set_time(self, unix_s):
        """Set the RTC to ``unix_s`` (called by the uplink session on ACK time sync)."""
        if self.rtc is None:
            return
        tm = time.gmtime(unix_s - self.offset)
        # RTC.datetime wants (year, month, day, weekday, hours, minutes, seconds, subseconds)
        self.rtc.datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))

    @staticmethod
    def ticks_ms():
        """Millisecond ticks (wrap at 2**30; compare with ``time.ticks_diff``)."""
        return time.ticks_ms()
