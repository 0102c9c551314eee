"""Streetlight app: dimming by time of night, motion boost with courtesy time, lamp-failure
alarm, ambient light and lamp level per window, energy per hour, PIR passes as a noisy count.

``tick(now_ms)`` is the whole behaviour; :meth:`run` calls it when a sample is due or the PIR
interrupt fired, and sleeps in between. Tests drive ``tick`` directly with fake hardware and a
fake clock.
"""

import time

from civic.apps.base import AppBase
from civic.hal.hardware import Lamp
from civic.hal.signal import Signal
from civic.sense.convert import lux_from_uv, ma_from_uv, quantise, round_div
from civic.sense.detect import LAMP_CLEAR_S, LAMP_REPEAT_S, LampMonitor
from civic.sense.energy import EnergyIntegrator
from civic.sense.events import EventCounter
from civic.sense.schedule import Dimmer
from civic.sense.window import Mean, period_for

# A light reading taken while the lamp is boosted, or within this long of its return to the
# scheduled level (a driver's fade, the sensor's response), is not used as such: the lamp's own
# light, reflected into the sensor, would carry the boosts, i.e. the passes, into lux. It counts as
# a settled one instead (see StreetlightApp._lux_sample), so every window has lux from all its
# readings and a pass changes neither whether lux is sent nor, on a steady sky, its value.
LUX_SETTLE_MS = 2000
# The lamp current is judged at the scheduled level only from this long after a boost's end,
# whatever ``sleep.interval_s``: a healthy driver that fades down slowly (a 30 s fade from 100 %)
# would otherwise read as failed after some passes only, and the alarm and ``lamp`` would tell when.
LAMP_SETTLE_MS = 60000
# A boost that read darker than the scheduled level (a driver that trips at full power) is not tried
# again for this long: each try after a pass would dim the lamp, and show in ``wh``, ``lamp`` or an
# alarm, so at most one pass a day can.
BOOST_RETRY_S = 86400


class StreetlightApp(AppBase):
    """One streetlight.

    Args:
        hw: hardware with ``pir`` (Pin), ``light`` (ADC), ``lamp`` (PWM), ``lamp_current`` (ADC),
            and ``feed()`` for the watchdog.
        cfg: ``/board.json`` dict.
        kind_policy: ``civic.policy.KindPolicy`` of ``streetlight``.
        reporter, releaser, clock, log: see :class:`AppBase`.
    """

    def __init__(self, hw, cfg, kind_policy, reporter, releaser, clock, log=print):
        AppBase.__init__(self, reporter, releaser, clock, log)
        self.hw = hw
        cal = cfg["cal"]
        app = cfg["app"]
        self.cal_light = cal["light"]
        self.cal_lamp = cal["lamp"]
        mot = kind_policy.field("mot")
        self.wake = Signal()
        self.mot_every_s = mot.get("release_every_s", kind_policy.window_s)
        self.lux_quantum = kind_policy.field("lux").get("quantum", 1)
        self.window_s = kind_policy.window_s
        self.lamp = Lamp(hw.lamp)
        self.dimmer = Dimmer(app["schedule"], app["tz_offset_min"], app["on_lux"], app["off_lux"],
                             app["boost_level"], app["courtesy_s"])
        # the time since the last pass is needed for the courtesy time only (ticks wrap)
        self.pir = EventCounter(mot["refractory_s"] * 1000, on_edge=self.wake, keep_ms=self.dimmer.courtesy_ms)
        self.monitor = LampMonitor(self.cal_lamp["ma_full"], self.cal_lamp["tolerance_pct"],
                                   self.cal_lamp["min_level"], clear_s=LAMP_CLEAR_S, repeat_s=LAMP_REPEAT_S)
        self.energy = EnergyIntegrator()
        self.sample_ms = cfg["sleep"]["interval_s"] * 1000
        self.feed_ms = max(cfg["wdt_ms"] // 3, 1)  # sleep at most this long: the watchdog is fed
        self._last_sample = None
        self.window = None
        self.mot_period = None
        self.lux = Mean()       # one value per reading; boosted ones stand in (see LUX_SETTLE_MS)
        self._lux_ref = None    # last settled reading (None: none since boot)
        self._lux_ref_lvl = 0   # the lamp level it was taken at
        self._lux_held = 0      # readings of this window since it, boosted, not yet in self.lux
        self._lux_done = 0      # readings since it already filled in at a window's close
        self.lvl = Mean()       # of the scheduled level: a motion boost must not show in it
        self._boost_off_ms = None  # ticks when the lamp last left a boost (set down at a sample)
        self._settle_ms = LAMP_SETTLE_MS  # its current is judged this long after (see sample)
        self._base = None       # scheduled level set at the last sample
        self._base_mw = None    # (level, mW) last measured without a boost
        self.lamp_bad = 0
        self.boost_ok = True    # False: a boost gave less light than the scheduled level (see sample)
        self._boost_dark_s = None  # when it did (boosts are tried again BOOST_RETRY_S later)
        self.last_lux = None
        self.last_ma = None

    def attach(self):
        """Hook the PIR interrupt (the handler only counts edges)."""
        pin = self.hw.pir
        pin.irq(handler=self.pir.irq, trigger=pin.IRQ_RISING)

    def configure(self, values):
        """Apply CONFIG values from the gateway (dim_schedule, courtesy_s, boost_level)."""
        self.dimmer.configure(values)
        self.pir.keep_ms = self.dimmer.courtesy_ms

    def tick(self, now_ms):
        """React to motion at once; sample sensors every ``sleep.interval_s``."""
        now_s = self.clock.time()
        if self.pir.poll(now_ms) and self.dimmer.dark and self.boost_ok:
            self.lamp.set_level(self.dimmer.level(now_s, 0))  # brighten now, not at the next sample
        if self._last_sample is None or time.ticks_diff(now_ms, self._last_sample) >= self.sample_ms:
            self._last_sample = now_ms
            self.sample(now_s, now_ms)

    def sample(self, now_s, now_ms):
        """Read light and current, check the lamp, set the level, integrate energy, close periods."""
        lux = lux_from_uv(self.hw.light.read_uv(), self.cal_light["lux_per_volt"])
        ma = ma_from_uv(self.hw.lamp_current.read_uv(), self.cal_lamp["ma_per_volt"], self.cal_lamp["offset_uv"])
        self.last_lux = lux
        self.last_ma = ma
        # judge the current against the level the lamp has been running at since the last sample
        commanded = self.lamp.level or 0
        # boosted while ``lux`` was read: above the level scheduled at the last sample
        base_then = self._base if self._base is not None else self.dimmer.scheduled(now_s)
        boosted = commanded > base_then
        off = self._boost_off_ms
        settled = judged = True  # lux / lamp current settled since the last boost
        dark = False  # a boost read darker than the scheduled level
        if off is not None:
            d = time.ticks_diff(now_ms, off)
            if d < 0 or d >= self._settle_ms:
                self._boost_off_ms = off = None  # settled: forget the stamp before ticks wrap
            else:
                settled = d >= LUX_SETTLE_MS
                judged = False
        # The lamp is judged at the scheduled level only: a reading at the boost (or fading from
        # it) that cleared or raised the failure would time a pass, by the alarm or by ``lamp``.
        # A boost darker than the scheduled level is dropped instead (no worse light), so a lamp
        # that died under a boost is judged at the scheduled level at once (LUX_SETTLE_MS).
        if not boosted and judged:
            if self.monitor.update(commanded, ma, now_s):
                self._alarm(["lamp_fail"], now_s)
        elif boosted and self.monitor.dark_at(base_then, ma):
            self.boost_ok = False
            self._boost_dark_s = now_s
            dark = True
        if self.monitor.repeat(now_s):  # at every sample: its time must not follow the boosts
            self._alarm(["lamp_fail"], now_s)
        dark_s = self._boost_dark_s
        if dark_s is not None and (now_s < dark_s or now_s - dark_s >= BOOST_RETRY_S):
            if now_s < dark_s:
                self._boost_dark_s = now_s  # the clock was set back: count from now
            else:
                self.boost_ok = True
                self._boost_dark_s = None
        self.dimmer.update_light(lux)
        base = self.dimmer.scheduled(now_s)  # without a motion boost: what level and energy report
        since = self.pir.since_event_ms(now_ms)  # called at each sample: forgets a stale stamp
        self.lamp.set_level(self.dimmer.boosted(base, since) if self.boost_ok else base)
        if boosted and (self.lamp.level or 0) < commanded:
            self._boost_off_ms = now_ms  # the boost ends now: the light settles from here
            # a boost dropped as dark fades down from no brighter than the scheduled level: its
            # current is judged as soon as the light is settled, as it would be without the pass
            self._settle_ms = LUX_SETTLE_MS if dark else LAMP_SETTLE_MS
        mw = self.cal_lamp["mains_v"] * ma
        if self._base is not None and commanded > self._base:
            # A motion boost ran since the last sample. Level and energy leave the device at the
            # scheduled level only: the boosts' share would count the passes under the lamp, which
            # leave only as the noisy mot count (the boost energy follows from that count). Use the
            # power last measured at that level (a driver's current is not quite linear in the
            # level), else scale the measured power down to it.
            last = self._base_mw
            mw = last[1] if last is not None and last[0] == self._base else mw * self._base // commanded
        else:
            self._base_mw = (commanded, mw)
        self._base = base
        for hour, mwh in self.energy.sample(now_s, mw):
            if self._trusted(hour):
                self._report("hour", hour, 3600, {"wh": round_div(mwh, 1000)})
        if self.held:
            self._retry_held(now_s)
        if not boosted and settled and self._lux_held:
            self._lux_fill(lux)  # into the window they belong to, before it may close
        self._close_periods(now_s)
        self._lux_sample(lux, commanded, base_then, boosted or not settled)
        self.lvl.add(base)
        if self.monitor.failed:
            self.lamp_bad = 1

    def _lux_sample(self, lux, level, base, boosted):
        """Count a light reading taken with the lamp at ``level`` (scheduled: ``base``) in the lux
        window mean. A boosted one (``boosted``: also still settling) is held back until the next
        settled reading and then counted on the straight line between the settled readings around
        it (see :meth:`_lux_fill`); with no settled reading since boot it counts as itself."""
        ref = self._lux_ref
        if not boosted:
            self._lux_ref = lux
            self._lux_ref_lvl = level
            self._lux_done = 0
            self.lux.add(lux)
        elif ref is None:
            self.lux.add(lux)
        elif level > base != self._lux_ref_lvl and level != self._lux_ref_lvl:
            # The scheduled level changed under a boost (the lamp came on boosted at dusk or at
            # boot): the last settled reading lacks the lamp's own light at it. Estimate the
            # reading at the scheduled level between that one and this, the lamp's light taken as
            # proportional to its level, and let it stand as the settled reading from here.
            est = ref + round_div((lux - ref) * (base - self._lux_ref_lvl), level - self._lux_ref_lvl)
            if est < 0:
                est = 0
            if self._lux_held:
                self._lux_fill(est)
            self._lux_ref = est
            self._lux_ref_lvl = base
            self._lux_done = 0
            self.lux.add(est)
        else:
            self._lux_held += 1

    def _lux_fill(self, end):
        """Count the held readings on the line from the last settled reading to ``end`` (None: the
        window closes while boosted; they count as that settled reading). Readings come at a fixed
        interval, so held reading i of m lies at i/(m+1) of the way (the first ``_lux_done`` of the
        m were counted at a window's close): a sky that rises or falls steadily gives the same mean
        with and without passes."""
        n = self._lux_held
        ref = self._lux_ref or 0  # never None while readings are held
        self.lux.total += n * ref
        self.lux.n += n
        if end is not None:
            k = self._lux_done  # held readings before these, filled in at the last window's close
            self.lux.total += round_div((end - ref) * n * (2 * k + n + 1), 2 * (k + n + 1))
        self._lux_done += n
        self._lux_held = 0

    def _close_periods(self, now_s):
        w = period_for(self.window, now_s, self.window_s)
        if self.window is not None and w != self.window:
            self._close_window(self.window)
        self.window = w
        p = period_for(self.mot_period, now_s, self.mot_every_s)
        if self.mot_period is not None and p != self.mot_period:
            self._release("mot", self.pir.take(), self.mot_period, self.mot_every_s, "win", now_s)
        self.mot_period = p

    def _close_window(self, w):
        if self._lux_held:
            self._lux_fill(None)  # boosted at the close: its last readings count as the settled one
        lux = self.lux.take()
        lvl = self.lvl.take()
        bad = self.lamp_bad
        self.lamp_bad = 0
        if lux is None or not self._trusted(w):
            return
        self._report("win", w, self.window_s, {"lux": quantise(lux, self.lux_quantum), "lvl": lvl, "lamp": bad})

    def sleep_ms(self, now_ms):
        """How long :meth:`run` may sleep after a tick at ``now_ms`` (next sample, watchdog)."""
        if self._last_sample is None:
            return 0
        left = self.sample_ms - time.ticks_diff(now_ms, self._last_sample)
        return max(1, min(left, self.feed_ms))

    async def run(self):
        """Forever: tick, feed the watchdog, sleep until the next sample or a PIR edge."""
        self.attach()
        while True:
            now_ms = self.clock.ticks_ms()
            self.tick(now_ms)
            self.hw.feed()
            await self.wake.wait_ms(self.sleep_ms(now_ms))
