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
from civic.sense.detect import LampMonitor
from civic.sense.energy import EnergyIntegrator
from civic.sense.events import EventCounter
from civic.sense.schedule import Dimmer
from civic.sense.window import Mean, period_for

# A light reading leaves the lux mean while the lamp is boosted and until it has been back at its
# scheduled level this long (a driver's fade, the sensor's response): the lamp's own light,
# reflected into the sensor, would otherwise carry the boosts, i.e. the passes, into lux.
LUX_SETTLE_MS = 2000


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
        self.pir = EventCounter(mot["refractory_s"] * 1000, on_edge=self.wake)
        self.mot_every_s = mot.get("release_every_s", kind_policy.window_s)
        self.lux_quantum = kind_policy.field("lux").get("quantum", 1)
        self.window_s = kind_policy.window_s
        self.lamp = Lamp(hw.lamp)
        self.dimmer = Dimmer(app["schedule"], app["tz_offset_min"], app["on_lux"], app["off_lux"],
                             app["boost_level"], app["courtesy_s"])
        self.monitor = LampMonitor(self.cal_lamp["ma_full"], self.cal_lamp["tolerance_pct"],
                                   self.cal_lamp["min_level"])
        self.energy = EnergyIntegrator()
        self.sample_ms = cfg["sleep"]["interval_s"] * 1000
        self.feed_ms = max(cfg["wdt_ms"] // 3, 1)  # sleep at most this long: the watchdog is fed
        self._last_sample = None
        self.window = None
        self.mot_period = None
        self.lux = Mean()       # of readings with the lamp at its scheduled level (see LUX_SETTLE_MS)
        self.lvl = Mean()       # of the scheduled level: a motion boost must not show in it
        self._boost_off_ms = None  # ticks when the lamp last left a boost (set down at a sample)
        self._base = None       # scheduled level set at the last sample
        self._base_mw = None    # (level, mW) last measured without a boost
        self.lamp_bad = 0
        self.last_lux = None
        self.last_ma = None

    def attach(self):
        """Hook the PIR interrupt (the handler only counts edges)."""
        pin = self.hw.pir
        pin.irq(handler=self.pir.irq, trigger=pin.IRQ_RISING)

    def configure(self, values):
        """Apply CONFIG values from the gateway (dim_schedule, courtesy_s, boost_level)."""
        self.dimmer.configure(values)

    def tick(self, now_ms):
        """React to motion at once; sample sensors every ``sleep.interval_s``."""
        now_s = self.clock.time()
        if self.pir.poll(now_ms) and self.dimmer.dark:
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
        boosted = commanded > (self._base if self._base is not None else self.dimmer.scheduled(now_s))
        settled = self._boost_off_ms is None or time.ticks_diff(now_ms, self._boost_off_ms) >= LUX_SETTLE_MS
        if self.monitor.update(commanded, ma):
            self._alarm(["lamp_fail"], now_s)
        self.dimmer.update_light(lux)
        base = self.dimmer.scheduled(now_s)  # without a motion boost: what level and energy report
        self.lamp.set_level(self.dimmer.boosted(base, self.pir.since_event_ms(now_ms)))
        if boosted and (self.lamp.level or 0) < commanded:
            self._boost_off_ms = now_ms  # the boost ends now: the light settles from here
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
        self._close_periods(now_s)
        if not boosted and settled:
            self.lux.add(lux)
        self.lvl.add(base)
        if self.monitor.failed:
            self.lamp_bad = 1

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
        lux = self.lux.take()
        lvl = self.lvl.take()
        bad = self.lamp_bad
        self.lamp_bad = 0
        if lvl is None or not self._trusted(w):
            return
        m = {"lvl": lvl, "lamp": bad}
        if lux is not None:  # None: the lamp was boosted at every reading of the window
            m["lux"] = quantise(lux, self.lux_quantum)
        self._report("win", w, self.window_s, m)

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
