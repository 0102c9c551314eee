"""Safety detectors: fire in a bin, a failed lamp. Each reports the moment it trips (an edge),
so the app sends one alarm per incident rather than one per reading. A fire that goes on burning
is announced again every :data:`FIRE_REPEAT_S`: nothing else in a bin's reports says it still
burns, and the gateway keeps an alarm open for 24 h after it was raised. A lamp that stays failed
is announced again every :data:`LAMP_REPEAT_S` for the same reason (its window reports' ``lamp``
says it goes on, but does not reopen a closed alarm); a tipped bin shows in every report (``tilt``).
"""

FIRE_CLEAR_MARGIN_DECI = 50  # must cool 5 degrees below the threshold (and stop rising) to clear
RATE_MIN_DT_S = 30  # the shortest interval a rate of rise is judged over (a watch reads every 60 s)
FIRE_REPEAT_S = 21600  # 6 h: four announcements inside the gateway's 24-h window, so one lost or late does not close it


class FireDetector:
    """Fire alarm when the temperature reaches ``threshold_c`` or rises at ``rise_c_per_min`` or faster.

    Temperatures are tenths of a degree; the rate is judged between consecutive readings
    (``(t1 - t0) * 60 >= rise * 10 * max(dt_s, RATE_MIN_DT_S)``, integers only). State survives deep sleep via
    :meth:`state` / :meth:`restore`.
    """

    def __init__(self, threshold_c, rise_c_per_min):
        self.threshold_deci = threshold_c * 10
        self.rise_c_per_min = rise_c_per_min
        self.prev = None  # (deci_c, time_s) of the previous reading
        self.active = False
        self.raised_s = None  # when the alarm was last announced

    def rising_fast(self, deci_c, now_s):
        """Whether the change since the previous reading is at least the alarm rate."""
        if self.prev is None:
            return False
        dt = now_s - self.prev[1]
        if dt <= 0:
            return False
        # judged over RATE_MIN_DT_S at least: two readings a second apart would make one ADC step of
        # noise (0.1 degree) a rise of 6 degrees a minute
        return (deci_c - self.prev[0]) * 60 >= self.rise_c_per_min * 10 * max(dt, RATE_MIN_DT_S)

    def update(self, deci_c, now_s):
        """Feed one reading; return True when the alarm trips, and again every :data:`FIRE_REPEAT_S`
        while it stays on (not at every reading)."""
        fast = self.rising_fast(deci_c, now_s)
        self.prev = (deci_c, now_s)
        if self.active:
            if deci_c < self.threshold_deci - FIRE_CLEAR_MARGIN_DECI and not fast:
                self.active = False
                return False
            raised = self.raised_s
            if raised is None or now_s < raised:
                self.raised_s = now_s  # state from older firmware, or the clock was set back: count from now
                return False
            if now_s - raised >= FIRE_REPEAT_S:
                self.raised_s = now_s
                return True
            return False
        if deci_c >= self.threshold_deci or fast:
            self.active = True
            self.raised_s = now_s
            return True
        return False

    def state(self):
        """JSON-storable state."""
        return [self.prev[0] if self.prev else None, self.prev[1] if self.prev else None, self.active,
                self.raised_s]

    def restore(self, s):
        """Restore from :meth:`state` (also the 3-item state of older firmware, without ``raised_s``)."""
        if s and s[0] is not None:
            self.prev = (s[0], s[1])
        self.active = bool(s and s[2])
        self.raised_s = s[3] if s and len(s) > 3 and isinstance(s[3], int) else None


LAMP_CLEAR_S = 3600  # a failed lamp counts as repaired after good readings for this long
# lamp_fail again this often while the lamp stays failed: the gateway keeps an alarm open for 24 h
# after it was raised, so four announcements inside that window (as for a fire) keep it open
# although one is lost or late; the window's ``lamp`` says it goes on in between
LAMP_REPEAT_S = 21600


class LampMonitor:
    """Lamp failure: measured current does not match the level the lamp runs at.

    Expected current is linear in the level (``ma_full * level / 100``). A reading is bad
    when it deviates by more than ``tolerance_pct`` of the expected current; below
    ``min_level`` the expected current is too small to judge, so only a lamp stuck on is
    caught (current above the tolerance band of full power). ``confirm`` consecutive bad
    readings are needed, riding over the driver's soft start after a level change.

    ``failed`` stays set until the readings have been good for ``clear_s`` (0: the first
    good one clears it). Once a reading at ``min_level`` or above was bad, one below it (where a
    dead lamp reads like a good one) neither starts nor continues that time: a dead lamp stays
    failed through the day. A failure seen only below it (stuck on) is cleared by any good one.
    :meth:`update` announces a failure when it trips, unless one was announced within
    ``repeat_s``, and :meth:`repeat` again every ``repeat_s`` while it stays failed
    (``repeat_s`` 0: at every trip, never repeated). The streetlight feeds only readings at the
    scheduled level: an alarm or a ``failed`` that changed with the motion boost would tell
    when someone passed under the lamp.
    """

    def __init__(self, ma_full, tolerance_pct, min_level, confirm=3, clear_s=0, repeat_s=0):
        self.ma_full = ma_full
        self.tolerance_pct = tolerance_pct
        self.min_level = min_level
        self.confirm = confirm
        self.clear_s = clear_s
        self.repeat_s = repeat_s
        self.bad_streak = 0
        self.failed = False
        self.good_since_s = None  # first of the good readings since the last bad one, while failed
        self.lit_bad = False  # failed with a bad reading at min_level or above: only such clear it
        self.raised_s = None  # when a failure was last announced

    def expected_ma(self, level):
        """Expected lamp current (mA) at ``level`` percent."""
        return self.ma_full * level // 100

    def reading_ok(self, level, measured_ma):
        """Whether one (level, current) reading is consistent."""
        if level < self.min_level:
            return measured_ma * 100 <= self.ma_full * self.tolerance_pct
        expected = self.expected_ma(level)
        dev = measured_ma - expected
        if dev < 0:
            dev = -dev
        return dev * 100 <= expected * self.tolerance_pct

    def update(self, level, measured_ma, now_s=0):
        """Feed one reading taken with the lamp settled at ``level``; return True only when the
        lamp is newly judged failed and no failure was announced in the last ``repeat_s``."""
        if self.reading_ok(level, measured_ma):
            self.bad_streak = 0
            if not self.failed:
                self.lit_bad = False  # the streak is over
            elif self.lit_bad and level < self.min_level:
                self.good_since_s = None  # proves only that the lamp is not stuck on: no repair
            else:
                since = self.good_since_s
                if since is None or now_s < since:
                    self.good_since_s = since = now_s  # first good one (or the clock was set back)
                if now_s - since >= self.clear_s:
                    self.failed = self.lit_bad = False
                    self.good_since_s = None
            return False
        if level >= self.min_level:
            self.lit_bad = True  # for this streak, and while failed
        return self._bad(now_s)

    def dark_at(self, level, measured_ma):
        """Whether the current is below the lowest one good at ``level`` (False below
        ``min_level``). Judges nothing: the streetlight drops a boost that gives less light than
        the scheduled level, and so judges the lamp at that level."""
        if level < self.min_level:
            return False
        return measured_ma * 100 < self.expected_ma(level) * (100 - self.tolerance_pct)

    def _bad(self, now_s):
        self.bad_streak += 1
        self.good_since_s = None
        if self.failed or self.bad_streak < self.confirm:
            return False
        self.failed = True
        raised = self.raised_s
        if self.repeat_s and raised is not None and 0 <= now_s - raised < self.repeat_s:
            return False  # announced lately: the window reports carry ``lamp``
        self.raised_s = now_s
        return True

    def repeat(self, now_s):
        """Return True when the lamp is still failed ``repeat_s`` after the last announcement
        (and count the next one from now). The streetlight asks at every sample, whatever the
        boost, so a repeat's time follows the first announcement, not the passes."""
        raised = self.raised_s
        if not (self.failed and self.repeat_s) or raised is None:
            return False
        if now_s < raised:
            self.raised_s = now_s  # the clock was set back: count from now
            return False
        if now_s - raised < self.repeat_s:
            return False
        self.raised_s = now_s
        return True
