"""Lamp level: dimming schedule by local time of night, darkness with hysteresis, motion boost."""

DAY_MIN = 1440


def minute_of_day(unix_s, tz_offset_min):
    """Local minute of the day (0..1439) for a UTC unix time."""
    return (unix_s // 60 + tz_offset_min) % DAY_MIN


def scheduled_level(schedule, minute):
    """Level of the schedule entry in force at ``minute``.

    ``schedule`` is ``[[minute, level], ...]`` sorted by minute; each entry holds until the
    next one, and the last entry of the day carries on past midnight.
    """
    level = schedule[-1][1]
    for start, lvl in schedule:
        if start <= minute:
            level = lvl
        else:
            break
    return level


class Dimmer:
    """Decides the lamp level.

    While it is dark (ambient light fell below ``on_lux``; it is light again above ``off_lux``)
    the lamp runs at the scheduled level, raised to ``boost_level`` for ``courtesy_s`` after
    the last motion. In daylight it is off.
    """

    def __init__(self, schedule, tz_offset_min, on_lux, off_lux, boost_level, courtesy_s):
        self.schedule = schedule
        self.tz_offset_min = tz_offset_min
        self.on_lux = on_lux
        self.off_lux = off_lux
        self.boost_level = boost_level
        self.courtesy_ms = courtesy_s * 1000
        self.dark = False

    def update_light(self, lux):
        """Feed an ambient light reading (hysteresis between on_lux and off_lux)."""
        if lux < self.on_lux:
            self.dark = True
        elif lux > self.off_lux:
            self.dark = False
        return self.dark

    def scheduled(self, unix_s):
        """Lamp level 0..100 from the schedule alone (0 in daylight)."""
        if not self.dark:
            return 0
        return scheduled_level(self.schedule, minute_of_day(unix_s, self.tz_offset_min))

    def boosted(self, base, since_motion_ms):
        """``base`` (from :meth:`scheduled`) raised to the boost level within ``courtesy_s`` of the
        last motion; ``since_motion_ms`` is None when no motion was seen. Never in daylight."""
        if (self.dark and since_motion_ms is not None and since_motion_ms < self.courtesy_ms
                and self.boost_level > base):
            return self.boost_level
        return base

    def level(self, unix_s, since_motion_ms):
        """Lamp level 0..100 now: :meth:`scheduled` then :meth:`boosted`."""
        return self.boosted(self.scheduled(unix_s), since_motion_ms)

    def configure(self, values):
        """Apply accepted CONFIG keys (``dim_schedule``, ``courtesy_s``, ``boost_level``); bad values are ignored."""
        sched = values.get("dim_schedule")
        if isinstance(sched, list) and sched and _valid_schedule(sched):
            self.schedule = sorted([[int(m), int(l)] for m, l in sched])
        c = values.get("courtesy_s")
        if isinstance(c, int) and 0 <= c <= 3600:
            self.courtesy_ms = c * 1000
        b = values.get("boost_level")
        if isinstance(b, int) and 0 <= b <= 100:
            self.boost_level = b


def _valid_schedule(sched):
    for row in sched:
        if not isinstance(row, (list, tuple)) or len(row) != 2:
            return False
        m, l = row
        if not isinstance(m, int) or not isinstance(l, int) or not 0 <= m < DAY_MIN or not 0 <= l <= 100:
            return False
    return True
