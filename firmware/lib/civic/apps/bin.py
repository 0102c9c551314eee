"""Waste-bin app: fill level (median of ultrasonic pings) released as the level at the end of its
release period (6 h), temperature with fire alarm, tilt / tip-over alarm, battery, and lid openings
released once a day as a noisy count.

Fill goes up a step with each deposit: released every 15-minute window, its steps would give the
window of every deposit (event times of a people-related signal). The policy's fill
``release_every_s`` bounds that to its period (docs/privacy.md).

The board sleeps between readings. In deep sleep the chip resets on wake, so everything that
must outlive a reading (window sums, the day's lid count, detector state, when the next reading
is due) is kept in a flash file written atomically after each change (``civic.store.atomic``).
"""

import asyncio
import json
import time

from civic.apps.base import AppBase
from civic.hal.hardware import Switch, Ultrasonic
from civic.hal.signal import Signal
from civic.sense.convert import battery_pct, c_from_deci, deci_c_from_uv, fill_pct, quantise, round_div
from civic.sense.detect import RATE_MIN_DT_S, FireDetector
from civic.sense.events import EventCounter
from civic.sense.ultrasonic import robust_mm
from civic.sense.window import period_for
from civic.store import atomic

PING_GAP_MS = 60  # let the previous ping's echoes die out
WATCH_S = 60  # reading interval while a fire may be starting
WATCH_MARGIN_DECI = 150  # "near the threshold": within 15 degrees of it
# An unacknowledged alarm is sent again at timer wakes on a fixed grid of the RTC (multiples of
# the retry step, UTC), never at a lid wake: the grid does not depend on when the lid was opened.
# The step starts at ALARM_RETRY_S when an alarm is raised and doubles after each retry slot the
# gateway did not acknowledge, up to ALARM_RETRY_MAX_S: a bin out of reach wakes for its alarm
# every 16 min (up to 30 s of radio each: 3.1 %, a third of what the readings cost at interval_s
# 300) instead of every 2 minutes for ever. Once a gateway is in range the alarm waits at most one
# step (outside a watch: no longer than the next reading). During a watch out of reach only the
# slots start the radio (below), so the cap is what a fire alarm may wait for a returning gateway:
# 16 min, not the hour it was until 2026-12-07 (3600 s).
# The cap is ALARM_RETRY_S * 2**3: the grids nest, every retry is on a multiple of 120 s and, at
# the cap, of 960 s (UTC).
ALARM_RETRY_S = 120
ALARM_RETRY_MAX_S = 960
# A reading at most this late keeps its chain's times: a slow board's boot, the links' start and the
# pings before it reads the clock (and a reading a lid wake held, which runs it at the timer wake's
# instant, or late by that wake's own few ms of work); planned from its own time, every later reading
# and radio start moved with it (a lid opening told for good). Later (a clock
# set forward by a time sync) it plans from now: the next reading then comes at least 30 s after, the
# fire detector's rate floor (RATE_MIN_DT_S), which a chain kept across a longer delay would not give.
LATE_S = 30
SLOT_BOOT_S = 3  # a timer wake reading the clock this soon after its retry slot is that slot's wake
# A lid wake that finds the next timer wake (reading or retry slot) due within HOLD_MS, or its second
# begun while the lid wake ran (the chip was up: the timer could not wake it), does not sleep: it waits
# until the instant that timer wake's code would run (the whole second plus this wake's own boot, the
# ticks since the reset) and does its work there, in the same boot (BinApp.hold_until_ms). Staying up
# is needed only from a few ms before the second (the deep sleep must have begun by then); up to 2 s it
# costs about what it saves (the held timer wake's own boot, 0.3-2 s at the same current): a lid opening
# next to a timer wake keeps the bin up at most HOLD_MS longer than one that sleeps at once, radio off.
# The boot is the one timer wakes take, measured at each timer wake on the RTC from the instant armed to
# the code (``bt`` in the state, smoothed; BinApp.timer_boot): on an ESP32 the ticks start only after the
# ROM and bootloader, so a lid wake's own ticks miss that part (held work a ROM boot early until
# 2026-12-07). Only with none measured yet the lid wake takes its ticks, capped at BOOT_MAX_MS (a port
# whose ticks did not restart at the reset), inside SLOT_BOOT_S so that a held slot stays the slot's.
HOLD_MS = 2000
BOOT_MAX_MS = 2500
# While the chip is up at a lid wake's hold or a radio session's linger, the tilt pin is no wake source
# (the chip is not asleep): the bin polls it every POLL_MS, and a tilt raises the tip alarm then, as a
# tilt wake would (at once, sooner than a tilt wake's boot), not at the next reading or never (the bin
# upright again before it: lost until 2026-12-07).
POLL_MS = 100
# A watch reading (every WATCH_S, on the device) does not start the radio once a radio session
# reached no gateway (frames waited and none was acknowledged): the 30-s linger at every reading
# kept the radio on half the time while a bin stayed hot out of reach (a sensor stuck hot: for
# ever). It starts the radio only for a new alarm, at the waiting alarm's retry slot, or, with no
# alarm waiting, at the first reading in each interval_s of the RTC grid (a watch then costs the
# radio no more than the normal readings); its reports wait in the outbox for that session. A session
# takes the readings that fall due in it and lingers on: the reading chain is not on the slot grid,
# and a slot session that ended at a reading a second later never reached a gateway.


def fresh_state():
    """State of a bin that has never read anything.

    ``alarm`` is the seq of the latest unacknowledged alarm, or False (``True``: saved by older
    firmware, seq unknown); ``ars`` is its retry step (s) and ``ard`` its next retry slot (RTC s, a
    multiple of ``ars``; 0: none planned, as in state saved by firmware without a back-off).
    ``fill`` is the latest fill reading of the fill period starting at ``fp``; ``fe`` is the end of
    the last fill period released (0: none yet). ``wt``: the last reading planned the next one at
    ``WATCH_S`` (a watch). ``gw``: the last radio session with frames waiting had some acknowledged
    (a gateway in reach; True until a session finds none). ``bt``: the boot of timer wakes (ms from
    the instant armed to the code reading the RTC, smoothed; None: none measured yet).
    """
    return {"next": 0, "win": None, "fp": None, "fill": None, "fe": 0, "tsum": 0, "tn": 0, "tilt": 0, "bat": None,
            "day": None, "lid": 0, "lid_t": None, "fire": None, "tip": False, "held": {}, "alarm": False,
            "ars": ALARM_RETRY_S, "ard": 0, "wt": False, "gw": True, "bt": None}


def _next_slot(now, step):
    # the first multiple of step (RTC seconds, UTC) after now: 1..step away
    return now + step - now % step


class BinApp(AppBase):
    """One waste bin.

    Args:
        hw: hardware with ``trig``/``echo`` (Pins), ``pulse_us`` (``machine.time_pulse_us``),
            ``temp``/``battery`` (ADCs), ``tilt``/``lid`` (Pins), and ``feed()``.
        cfg: ``/board.json`` dict.
        kind_policy: ``civic.policy.KindPolicy`` of ``bin``.
        reporter, releaser, clock, log: see :class:`AppBase`.
        state_path: flash file for the state that survives deep sleep.
        pause: ``async pause(ms)`` between pings (``asyncio.sleep_ms``).
    """

    def __init__(self, hw, cfg, kind_policy, reporter, releaser, clock, state_path="/state/bin.json",
                 pause=None, log=print):
        AppBase.__init__(self, reporter, releaser, clock, log)
        self.hw = hw
        cal = cfg["cal"]
        io = cfg["io"]
        app = cfg["app"]
        self.cal_fill = cal["fill"]
        self.cal_temp = cal["temp"]["table"]
        self.cal_bat = cal["battery"]
        self.sonar = Ultrasonic(hw.trig, hw.echo, hw.pulse_us, self.cal_fill["timeout_us"])
        self.tilt = Switch(hw.tilt, io["tilt"].get("active", 1))
        self.lid = Switch(hw.lid, io["lid"].get("active", 1))
        lid = kind_policy.field("lid")
        self.lid_refractory_s = lid.get("refractory_s", 5)
        self.lid_every_s = lid.get("release_every_s", 86400)
        self.wake = Signal()
        self.held_slot = False  # hold_until_ms: the instant held is the alarm's retry slot
        # keep_ms=0: the time since an opening is never asked; each poll (run_awake) forgets the
        # stamps it no longer needs, so none is compared after ticks wrap (2**30 ms)
        self.lid_irq = EventCounter(self.lid_refractory_s * 1000, on_edge=self.wake, keep_ms=0)
        self.feed_ms = max(cfg["wdt_ms"] // 3, 1)
        self.q_fill = kind_policy.field("fill").get("quantum", 10)
        self.fill_every_s = kind_policy.field("fill").get("release_every_s", kind_policy.window_s)
        self.q_bat = kind_policy.field("bat").get("quantum", 10)
        self.window_s = kind_policy.window_s
        self.interval_s = cfg["sleep"]["interval_s"]
        self.mode = cfg["sleep"]["mode"]
        self.wake_names = cfg["sleep"].get("wake", [])
        self.fire = FireDetector(app["fire_c"], app["fire_rise_c_per_min"])
        self.state_path = state_path
        self.pause = pause if pause is not None else asyncio.sleep_ms
        self.state = self._load()
        self.held = self.state["held"]  # a lid count waiting for the RNG outlives deep sleep
        self.fire.restore(self.state["fire"])

    def configure(self, values):
        """Apply CONFIG values from the gateway (``interval_s``, ``fire_c``, ``fire_rise_c_per_min``).

        Out-of-range values are ignored (config never widens what leaves the device).
        """
        v = values.get("interval_s")
        if isinstance(v, int) and not isinstance(v, bool) and 60 <= v <= 86400:
            self.interval_s = v
        v = values.get("fire_c")
        if isinstance(v, int) and not isinstance(v, bool) and 20 <= v <= 200:
            self.fire.threshold_deci = v * 10
        v = values.get("fire_rise_c_per_min")
        if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 100:
            self.fire.rise_c_per_min = v

    def _alarm(self, codes, now_s, m=None):
        # The latest alarm's seq is kept until the outbox no longer holds it (acknowledged):
        # until then the bin wakes on the alarm retry grid. ACKs are cumulative and the cap drops
        # alarms oldest first, so an earlier alarm is gone from the outbox when this one is.
        # A new alarm (also one raised while another waits, or a fire announced again) is news:
        # its retries start again at the shortest step, from the next slot of that grid.
        s = AppBase._alarm(self, codes, now_s, m)
        if s is not None:
            st = self.state
            st["alarm"] = s
            st["ars"] = ALARM_RETRY_S
            st["ard"] = _next_slot(now_s, ALARM_RETRY_S)
        return s

    def _alarm_delivered(self):
        # acknowledged: no retry grid until the next alarm (which starts at the shortest step)
        st = self.state
        st["alarm"] = False
        st["ars"] = ALARM_RETRY_S
        st["ard"] = 0

    def alarm_backoff(self, now):
        """Account a wake with the links on at which the alarm still waits (after the linger).

        If the wake was at or after the planned retry slot, the slot went unacknowledged: the step
        doubles (up to ``ALARM_RETRY_MAX_S``) and the next slot is the next multiple of the new step.
        A reading before the slot changes nothing. State without a planned slot (older firmware)
        or with one further than a step ahead (clock set back) gets the next slot of the grid.
        Called only at timer wakes and at a wake that raised an alarm, never at a lid wake, so the
        slots do not depend on when a lid was opened. Returns whether the state changed.
        """
        st = self.state
        step = st["ars"]
        due = st["ard"]
        if due and due <= now:
            step = min(step * 2, ALARM_RETRY_MAX_S)
        elif due and due <= now + step:
            return False
        st["ars"] = step
        st["ard"] = _next_slot(now, step)
        return True

    def alarm_waits(self):
        """Whether an alarm waits to be delivered: its seq is still in the outbox.

        Clears the flag (in RAM; the caller saves) once the outbox no longer holds it. A ``True``
        saved by older firmware has no seq: it waits until :meth:`run_deep` sees the outbox empty.
        """
        a = self.state["alarm"]
        if a is True or not a:
            return bool(a)
        if self.reporter.outbox.next_after(a - 1) == a:  # membership, without allocating
            return True
        self._alarm_delivered()
        return False

    # -- persistence -------------------------------------------------------------------------

    def _load(self):
        try:
            raw = atomic.read(self.state_path)
        except ValueError:  # CorruptFile: start afresh (counts lost, never invented)
            raw = None
        st = fresh_state()
        if raw is not None:
            try:
                st.update(json.loads(raw))
            except ValueError:
                pass
        # A retry step out of its range would stop the back-off (or divide by zero), a slot off its
        # grid would send off the grid: start them afresh (the next slot comes from the grid). A
        # step reset drops its slot too: a slot of a longer step (the 1-h cap of older firmware)
        # can lie further ahead than the new step and would hold the alarm back until then.
        v = st["ars"]
        d = st["ard"]
        if isinstance(v, bool) or not isinstance(v, int) or not ALARM_RETRY_S <= v <= ALARM_RETRY_MAX_S:
            st["ars"] = v = ALARM_RETRY_S
            d = None
        if isinstance(d, bool) or not isinstance(d, int) or d < 0 or d % v:
            st["ard"] = 0
        v = st["bt"]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= SLOT_BOOT_S * 1000:
            st["bt"] = None  # damaged or none: the lid wake takes its ticks until a timer wake measures
        for k, dv in (("wt", False), ("gw", True)):
            if not isinstance(st[k], bool):
                st[k] = dv  # damaged: as a bin that never watched, the radio as before
        return st

    def save(self):
        """Write the state to flash (atomic replace); return False (counted, logged) if it failed.

        A full or failing flash must not stop the bin: the state stays in RAM (lost at the next
        deep sleep, which is no worse than a power loss) and the reading, upload and sleep go on.
        """
        self.state["fire"] = self.fire.state()
        try:
            d = self.state_path.rsplit("/", 1)[0]
            if d:
                atomic.makedirs(d)
            atomic.write(self.state_path, json.dumps(self.state).encode())
        except OSError as exc:
            self.errors += 1
            self.log("state save failed: %r" % (exc,))
            return False
        return True

    # -- sensing -----------------------------------------------------------------------------

    async def measure(self):
        """Take one reading: ``(fill % or None, temperature in tenths of a degree, tilted, battery %)``."""
        pings = []
        n = self.cal_fill["pings"]
        for i in range(n):
            pings.append(self.sonar.ping())
            if i + 1 < n:
                await self.pause(PING_GAP_MS)
        dist = robust_mm(pings, self.cal_fill["outlier_mm"])
        fill = None if dist is None else fill_pct(dist, self.cal_fill["empty_mm"], self.cal_fill["full_mm"])
        deci = deci_c_from_uv(self.hw.temp.read_uv(), self.cal_temp)
        b = self.cal_bat
        bat = battery_pct(self.hw.battery.read_uv(), b["divider_num"], b["divider_den"], b["empty_mv"], b["full_mv"])
        return fill, deci, self.tilt.active(), bat

    def record(self, now_s, fill, deci, tilted, bat):
        """Account one reading: alarms at once, then window sums; close finished periods first."""
        st = self.state
        if self.held:
            self._retry_held(now_s)
        self._close_periods(now_s)
        prev = self.fire.prev
        if self.fire.update(deci, now_s):
            self._alarm(["fire"], now_s, {"temp": c_from_deci(deci)})
        self.tip_check(now_s, tilted)
        if fill is not None:
            st["fill"] = fill
        st["tsum"] += deci
        st["tn"] += 1
        if tilted:
            st["tilt"] = 1
        st["bat"] = bat
        i = self.next_interval(deci, now_s, prev)
        st["wt"] = i < self.interval_s
        # the next reading follows the one planned, not this one's time: a reading read late (a slow
        # boot, the links and pings before it) leaves the chain where it was
        # ... only when late by that (LATE_S): a reading found later (the clock
        # moved on by an ACK's time sync) plans from now, or two readings could come a second apart and
        # the rate-of-rise check divide a sensor's noise by that second (a false fire alarm)
        n = st["next"]
        st["next"] = (n if n <= now_s <= n + LATE_S else now_s) + i

    def next_interval(self, deci, now_s, prev):
        """Seconds to the next reading: ``interval_s``, or ``WATCH_S`` while the temperature is
        near the fire threshold, or rising at half the alarm rate or more since ``prev``
        (``(deci, time_s)`` of the previous reading), or the fire alarm is on."""
        f = self.fire
        near = deci >= f.threshold_deci - WATCH_MARGIN_DECI
        rising = False
        if prev is not None:
            dt = now_s - prev[1]
            rising = dt > 0 and (deci - prev[0]) * 60 * 2 >= f.rise_c_per_min * 10 * max(dt, RATE_MIN_DT_S)
        if near or rising or f.active:
            return min(self.interval_s, WATCH_S)
        return self.interval_s

    def tip_check(self, now_s, tilted):
        """Tip-over alarm once per incident (latched until the bin is upright again)."""
        if tilted and not self.state["tip"]:
            self.state["tip"] = True
            self._alarm(["tip"], now_s)
        elif not tilted:
            self.state["tip"] = False

    def lid_opened(self, now_s):
        """Count a lid opening seen at a deep-sleep wake (refractory on the RTC, which keeps running)."""
        last = self.state["lid_t"]
        if last is None or now_s - last >= self.lid_refractory_s or now_s < last:
            self.state["lid"] += 1
            self.state["lid_t"] = now_s

    def _close_periods(self, now_s):
        st = self.state
        w = period_for(st["win"], now_s, self.window_s)
        if st["win"] is not None and w != st["win"]:
            self._close_window(st["win"])
        st["win"] = w
        if self.fill_every_s != self.window_s:
            p = period_for(st["fp"], now_s, self.fill_every_s)
            if st["fp"] is not None and p != st["fp"]:
                self._close_fill(st["fp"], now_s)
            st["fp"] = p
        d = period_for(st["day"], now_s, self.lid_every_s)
        if st["day"] is not None and d != st["day"]:
            self._release("lid", st["lid"], st["day"], self.lid_every_s, "day", now_s)
            st["lid"] = 0
        st["day"] = d

    def _close_fill(self, p, now_s):
        # The level at the end of the fill period, alone in a "win" report over that period (like
        # the streetlight's mot); no reading in the period: nothing to release. A clock set back
        # by more than STEP_BACK_S also leaves a period: that one is not over (now < its end), or
        # was released already (before ``fe``, the end of the last one released, kept in flash
        # as the ledger keeps its periods): each period leaves at most once, never before its end.
        st = self.state
        fill = st["fill"]
        st["fill"] = None
        end = p + self.fill_every_s
        if fill is None or p < st["fe"] or now_s < end or not self._trusted(p):
            return
        if self._report("win", p, self.fill_every_s, {"fill": quantise(fill, self.q_fill)}):
            st["fe"] = end

    def _close_window(self, w):
        st = self.state
        m = {}
        if st["fill"] is not None and self.fill_every_s == self.window_s:  # policy without a fill period
            m["fill"] = quantise(st["fill"], self.q_fill)
            st["fill"] = None
        if st["tn"]:
            m["temp"] = c_from_deci(round_div(st["tsum"], st["tn"]))
            m["tilt"] = st["tilt"]
        if st["bat"] is not None:
            m["bat"] = quantise(st["bat"], self.q_bat)
        st["tsum"] = 0
        st["tn"] = 0
        st["tilt"] = 0
        st["bat"] = None
        if m and self._trusted(w):
            self._report("win", w, self.window_s, m)

    async def cycle(self):
        """One full reading: measure, account, persist."""
        fill, deci, tilted, bat = await self.measure()
        self.record(self.clock.time(), fill, deci, tilted, bat)
        self.save()

    def _next_s(self, now=None):
        # Seconds to the next reading, never more than one interval: a clock set back (time sync)
        # would otherwise leave a reading planned far in the future (a bin asleep for days). Only
        # reads the plan: re-planning it is replan's, which a lid wake never calls.
        if now is None:
            now = self.clock.time()
        return min(self.state["next"], now + self.interval_s) - now

    def replan(self, now=None):
        """Bring a reading planned more than ``interval_s`` ahead (the clock was set back) to one
        interval from ``now``; return whether the plan changed (the caller saves).

        Called only where the clock may have been set back and the time is not a lid opening's: at
        the start of a timer wake or a boot, and after a radio session (an ACK's time sync steps the
        clock back there, :meth:`session`). A lid wake never re-plans (it saves its state, and a
        plan from its own time would move every later reading and radio start with the opening):
        after the session that stepped the clock back it finds the plan already made and saved.
        """
        if now is None:
            now = self.clock.time()
        st = self.state
        if st["next"] > now + self.interval_s:
            st["next"] = now + self.interval_s
            return True
        return False

    def due(self):
        """Whether the next reading is due."""
        return self._next_s() <= 0

    # -- sleep orchestration -----------------------------------------------------------------

    def on_pin_wake(self):
        """Called after a deep-sleep wake by a GPIO: count the lid, check tilt, persist.

        The port does not tell which pin woke the chip, and a quick lid may already be shut
        again after the boot: only the lid and tilt pins are armed, so a wake that is not a
        tilt counts as a lid opening.

        Returns:
            True only if this wake raised a tip alarm (its time is in the alarm itself). Any other
            pin wake (a lid opening) never starts the radio, not even with a reading due or an
            alarm unacknowledged: radio or adverts starting then would tell any scanner, and the
            gateway's ``received_at``, when the lid was opened. Readings and alarm retries happen
            at timer wakes (:meth:`sleep_plan`), whose times never depend on a lid opening; a lid
            wake that keeps one from happening does its work at its instant (:meth:`hold_until_ms`).
        """
        now = self.clock.time()
        tilted = self.tilt.active()
        if self.lid.active() or not tilted:
            self.lid_opened(now)
        before = self.alarms
        self.tip_check(now, tilted)
        self.alarm_waits()  # an alarm acknowledged at an earlier wake no longer needs the radio
        self.save()
        return self.alarms != before

    def alarm_retry_s(self, now=None):
        """Seconds from ``now`` (None: the clock's time) to the next alarm retry slot, or None if no
        alarm waits.

        The slot is the one planned (``ard``, a multiple of the step ``ars`` on the RTC) if it lies
        ahead, within a step; otherwise (none planned, or passed: a lid wake that held it took it,
        :meth:`hold_until_ms`) the next multiple of the step: 1..step away, never 0.
        """
        st = self.state
        if not st["alarm"]:
            return None
        if now is None:
            now = self.clock.time()
        step = st["ars"]
        due = st["ard"]
        if now < due <= now + step:
            return due - now
        return step - now % step

    def timer_boot(self, now_ms):
        """At a timer wake: measure its boot on the RTC, ``now_ms`` (the code's first reading of the
        clock) less the instant the timer was armed for (the planned reading or retry slot, on a whole
        second), and keep it smoothed in ``bt`` (saved with the reading's state). A wake found more than
        ``SLOT_BOOT_S`` after every planned instant (the clock stepped) measures nothing.
        """
        st = self.state
        now = now_ms // 1000
        cands = [st["next"]]
        if st["alarm"]:
            d = st["ard"]
            cands.append(d if d else now - now % st["ars"])
        armed = None
        for c in cands:
            if c is not None and 0 <= now_ms - c * 1000 <= SLOT_BOOT_S * 1000 and (armed is None or c < armed):
                armed = c
        if armed is None:
            return
        b = now_ms - armed * 1000
        old = st["bt"]
        st["bt"] = b if old is None else (3 * old + b + 2) // 4

    def hold_until_ms(self, boot_ms, now_ms=None):
        """At a lid wake: the instant (RTC ms) at which it does the work of the timer wake it keeps
        from happening, or None (it sleeps, the timer wake comes as planned).

        The timer wake is the next planned reading (``next``) or, while an alarm waits, retry slot
        (``ard``; with none planned, the multiple of the step the timer was armed for), not one
        planned before this wake began (a second before it, for the boot before ticks start: that
        one was not kept by the lid). If it is due within ``HOLD_MS``, or its second has begun (the
        lid was opened within a boot before it), the lid wake waits for the instant that timer wake
        would read the clock at, its whole second plus ``boot_ms`` (the timer wakes' boot measured on
        the RTC, ``bt``: :meth:`timer_boot`; with none yet this wake's ticks), and then runs as it
        would: the reading, the radio if due, the back-off step at an unacknowledged slot. Frames,
        adverts and ``received_at`` are then the same as without the opening, and no reading is late
        and no slot skipped (a second late and skipped until 2026-12-07). If that instant has passed (the lid opened within this wake's own few ms of
        work before it), at once. Costs at most ``HOLD_MS`` more awake than the timer wake's boot it
        saves (docs/privacy.md).

        ``now_ms``: the RTC when this wake's code began (None: now), read before the lid wake's own
        work (its state save) so that the work falls inside the wait. Sets ``held_slot``: the instant is
        the waiting alarm's retry slot, whose radio :meth:`run_deep` then starts however late the slow
        work made it (radio_due would take a slot reached past ``SLOT_BOOT_S`` for none).
        """
        if now_ms is None:
            now_ms = self.clock.time_ms()
        self.held_slot = False
        began = (now_ms - boot_ms) // 1000
        st = self.state
        w = st["next"]
        if w < began:
            # passed before this wake (the clock set forward past it in the last session): the last
            # wake armed the whole second after it slept (sleep_plan), which is this wake's next
            # second, as a lid wake begins before the timer that wake armed (a second late until
            # 2026-12-07: a reading found late by more than LATE_S then planned from the lid's time)
            w = began + 1
        if st["alarm"]:
            step = st["ars"]
            d = st["ard"]
            if not (d and began <= d <= now_ms // 1000 + step):
                d = began + (-began) % step  # the first multiple of the step from this wake on
            if w is None or d <= w:
                w = d
                self.held_slot = True
        if w is None or w * 1000 - now_ms > HOLD_MS:
            self.held_slot = False
            return None
        return w * 1000 + boot_ms

    def tilt_poll(self):
        """While the chip is up (a hold, a linger: the tilt pin wakes only a sleeping chip), raise the
        tip alarm if the bin is tilted and no tip is latched; save it. Returns whether it raised one.

        Only raises: the latch is cleared, as before, by a reading or a pin wake that finds the bin
        upright, so a bin rocking during a session raises one alarm per incident, not one per swing.
        """
        if self.state["tip"] or not self.tilt.active():
            return False
        self.tip_check(self.clock.time(), True)
        self.save()
        return True

    async def _until_ms(self, at_ms, boot_ms=0):
        # awake (feeding the watchdog, polling the tilt and the lid) until the RTC shows at_ms; True if
        # a tilt raised the tip alarm meanwhile (the caller then acts as a tilt wake: radio at once).
        # The lid pin wakes only a sleeping chip: an opening while held (its edge, polled) is counted
        # here as its own lid wake would have counted it (refractory on the RTC, at the opening plus
        # the boot: that wake's time, as the first opening's count is this wake's), and saved
        was = self.lid.active()
        while True:
            if self.tilt_poll():
                return True
            o = self.lid.active()
            if o and not was:
                n = self.state["lid"]
                self.lid_opened((self.clock.time_ms() + boot_ms) // 1000)
                if self.state["lid"] != n:
                    self.save()
            was = o
            left = at_ms - self.clock.time_ms()
            if left <= 0:
                return False
            self.hw.feed()
            await self.wake.wait_ms(min(left, self.feed_ms, POLL_MS))

    def radio_due(self, now):
        """Whether a timer wake at ``now`` starts the radio before its reading.

        Yes unless the last reading planned this one as a watch reading (``WATCH_S``) and the last
        radio session reached no gateway (``gw``). Then only at the waiting alarm's retry slot: on
        the grid (a multiple of the step) once the planned slot is reached, or at once with no slot
        planned (older state) or one further than a step ahead (clock set back, as in
        :meth:`alarm_retry_s`); a slot missed (the board was off) is not made up off the grid at a
        later reading: the next slot of the grid sends. With no alarm waiting, at the
        first reading in an ``interval_s`` of the RTC grid. A reading that raises an alarm starts it
        anyway (:meth:`run_deep`). All of it depends only on readings, the alarm grid and earlier
        sessions (timer wakes), never on a lid opening.
        """
        st = self.state
        if not st["wt"] or st["gw"]:
            return True
        if self.alarm_waits():
            d = st["ard"]
            step = st["ars"]
            if not d or d > now + step:
                return True
            # on the grid, allowing the boot (SLOT_BOOT_S): a wake that reads the clock a second after
            # its slot is that slot's, or no slot would ever send on a board that boots slowly
            return d <= now and now % step < SLOT_BOOT_S
        prev = self.fire.prev
        i = self.interval_s
        return prev is None or now < prev[1] or now // i > prev[1] // i

    def sleep_plan(self):
        """``(ms until the next timer wake, io names to arm as wake sources)``.

        The next timer wake is the next reading, or the next alarm retry slot if an alarm waits
        and the slot comes first. A switch that is active now (lid left open, bin lying on its
        side) is not armed: a level wake would fire again at once and drain the battery.

        The time is read once, in milliseconds, and the timer is armed to the whole second of the
        wake: every timer wake lands at .000 of its second (plus a constant boot time), not at the
        fraction of the second this wake went to sleep in, which after a lid wake would be set by
        the lid opening (the gateway knows to the millisecond when the bin slept: after its ACK).
        A reading whose second has begun wakes at the next whole second, never at once (a lid wake
        does not get here then: it takes that reading itself, :meth:`hold_until_ms`).
        """
        now_ms = self.clock.time_ms()
        now = now_ms // 1000
        s = max(1, self._next_s(now))
        r = self.alarm_retry_s(now)
        if r is not None and r < s:
            s = r
        ms = max(0, s * 1000 - now_ms % 1000)
        pins = []
        for name in self.wake_names:
            sw = self.lid if name == "lid" else self.tilt if name == "tilt" else None
            if sw is not None and not sw.active():
                pins.append(name)
        return ms, pins

    async def linger(self, pending, max_s):
        """Stay awake (advertising) until the outbox is empty or ``max_s`` passed.

        A reading that falls due meanwhile is taken then, at its time, and the session goes on: a
        session that ended at the reading lasted only as long as the reading's offset from the
        retry slot, which could be too short for any gateway, for every slot of a watch. A tilt is
        polled meanwhile (:meth:`tilt_poll`). Returns how many frames those readings (and a tip alarm)
        queued.
        """
        start = self.clock.ticks_ms()
        queued = 0
        box = self.reporter.outbox
        tilt = False
        while True:
            # frames made less frames the outbox dropped at its cap (a new frame pushes out the
            # oldest: counted, a session no gateway answered looked answered); not the change of
            # pending(), which an ACK during the reading's pings lowers (gw then went False)
            n, d = self.reports + self.alarms, box.dropped
            if self.due():
                await self.cycle()
            if tilt:
                self.tilt_poll()  # tilted while waiting: the tip alarm goes in this session
            queued += max(0, self.reports + self.alarms - n - (box.dropped - d))
            left_ms = max_s * 1000 - time.ticks_diff(self.clock.ticks_ms(), start)
            if left_ms <= 0 or not pending():
                return queued
            self.hw.feed()
            wait = min(left_ms, self._next_s() * 1000, self.feed_ms)
            tilt = False
            while wait > 0:  # in POLL_MS steps for the tilt; the outbox and readings as before
                step = min(wait, POLL_MS)
                wait -= step
                if await self.wake.wait_ms(step):
                    break
                tilt = self.tilt.active() and not self.state["tip"]
                if tilt:
                    break  # raised at the loop's top, counted with the frames queued

    async def run_deep(self, woke_by_pin, pending, sleeper, linger_s=30, start_links=None):
        """One wake of a deep-sleeping bin: handle the wake, read if due, upload, sleep.

        Args:
            woke_by_pin: this boot is a deep-sleep wake by the lid or tilt switch.
            pending: callable returning the number of un-acknowledged frames.
            sleeper: callable(ms, io_names) that arms the wake pins and deep-sleeps (does not
                return on a board; the simulator resets the board after the time).
            linger_s: longest time to stay awake for the gateway to collect the reports.
            start_links: callable starting the links, called at timer wakes (a reading due,
                an alarm retry slot) and at a wake that raised a tip alarm; never for a lid
                opening (see :meth:`on_pin_wake`) except at the instant of the timer wake it kept
                from happening, as that timer wake would (:meth:`hold_until_ms`); at a watch
                reading out of a gateway's reach only as :meth:`radio_due` says or when the
                reading raised an alarm.
        """
        ticks = self.clock.ticks_ms()  # restart at the reset, after the ROM boot on an ESP32
        began_ms = self.clock.time_ms()  # before on_pin_wake's save: its flash write falls in the hold
        if not woke_by_pin:
            self.timer_boot(began_ms)
        boot_ms = self.state["bt"]
        if boot_ms is None:
            boot_ms = min(max(0, ticks), BOOT_MAX_MS)
        tip = woke_by_pin and self.on_pin_wake()
        slot = False
        if woke_by_pin and not tip:
            at_ms = self.hold_until_ms(boot_ms, began_ms)
            slot = self.held_slot
            if at_ms is not None:
                if await self._until_ms(at_ms, boot_ms):
                    tip = True  # tilted while held: as a tilt wake, the radio at once
                else:
                    woke_by_pin = False  # from here on the timer wake this lid wake kept from happening
        if not woke_by_pin and self.replan():
            # a reading planned too far ahead (clock set back, not re-planned: power lost, older
            # firmware) is brought forward at a timer wake, never a lid wake, and kept: frequent
            # wakes (alarm retries) must not push it on for ever
            self.save()
        if tip or not woke_by_pin:
            # a held retry slot sends as the slot's timer wake would, even reached late (slow work)
            radio = tip or slot or self.radio_due(self.clock.time())
            if radio and start_links is not None:
                start_links()
            before = self.alarms
            if self.due():
                await self.cycle()
            if not radio and self.alarms != before:
                radio = True  # a new alarm goes at once
                if start_links is not None:
                    start_links()
            if radio:
                await self.session(pending, linger_s)
        ms, pins = self.sleep_plan()
        sleeper(ms, pins)

    async def session(self, pending, linger_s):
        """Linger with the links on, then account the session: the alarm (delivered, or its slot
        unacknowledged) and whether a gateway took frames (``gw``); save what changed."""
        st = self.state
        n = pending()
        n += await self.linger(pending, linger_s)
        left = pending()
        # an ACK's time sync may have set the clock back: the next reading re-planned here, from
        # the session's end, and saved, so a lid wake before it finds the plan made (replan)
        changed = self.replan()
        if n and st["gw"] != (left < n):
            st["gw"] = left < n
            changed = True
        a = st["alarm"]
        if a is True and not left:
            self._alarm_delivered()  # older firmware's flag (no seq): the outbox is empty
        if a and not self.alarm_waits():
            changed = True  # the gateway has the alarm; other reports may still wait
        elif a and self.alarm_backoff(self.clock.time()):
            changed = True  # the slot went unacknowledged: the next is a step further
        if changed:
            self.save()

    async def run_awake(self):
        """Boards that stay powered: lid by IRQ, a reading every ``interval_s``; sleeps between."""
        pin = self.hw.lid
        trig = pin.IRQ_RISING if self.lid.active_level else pin.IRQ_FALLING
        pin.irq(handler=self.lid_irq.irq, trigger=trig)
        while True:
            if self.lid_irq.poll(self.clock.ticks_ms()):
                self.state["lid"] += self.lid_irq.take()
            self.replan()  # clock set back: saved with the next reading
            if self.due():
                await self.cycle()
            self.hw.feed()
            left_ms = self._next_s() * 1000
            await self.wake.wait_ms(max(1, min(left_ms, self.feed_ms)))
