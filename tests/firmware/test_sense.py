"""civic.sense logic, run in the real MicroPython runtime (never CPython).

Each test runs one MicroPython script that prints JSON results; assertions are made here.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from hil.sim.mprun import MpResult

Mpy = Callable[..., MpResult]


def run_json(mpy: Mpy, code: str) -> Any:
    """Run ``code`` (which must print one JSON document as its last line) and parse it."""
    out = mpy("import json\n" + code).stdout.strip().splitlines()
    return json.loads(out[-1])


def test_pir_pulses_every_2s_with_refractory_10s_count_once_per_10s(mpy: Mpy) -> None:
    res = run_json(mpy, """
from civic.sense.events import EventCounter
c = EventCounter(10000)
per_window = []
t = 0
for window in range(6):              # six 10-second windows
    for k in range(5):               # a PIR pulse every 2 s
        c.irq(None)
        c.poll(t)
        t += 2000
    per_window.append(c.take())
print(json.dumps(per_window))
""")
    assert res == [1, 1, 1, 1, 1, 1]


def test_pir_separate_people_are_counted_and_ticks_wrap(mpy: Mpy) -> None:
    res = run_json(mpy, """
import time
from civic.sense.events import EventCounter
c = EventCounter(10000)
t = time.ticks_add(0, -3000)        # just before the 2**30 tick wrap
for i in range(4):                   # passes 12 s apart, across the wrap
    c.irq(None); c.irq(None)         # two edges in one poll period count once
    c.poll(t)
    t = time.ticks_add(t, 12000)
quiet = c.poll(t)                    # no new edges: no activity
print(json.dumps([c.take(), quiet, c.since_event_ms(t)]))
""")
    assert res == [4, False, 12000]


def test_fill_median_rejects_outliers(mpy: Mpy) -> None:
    res = run_json(mpy, """
from civic.sense.ultrasonic import robust_mm, median
from civic.sense.convert import fill_pct, quantise
us = lambda mm: mm * 2000 // 343 + 1   # round-trip time for a distance
pings = [us(600), us(605), us(120), us(598), us(2500)]   # a bag flap and a multipath echo
d = robust_mm(pings, 80)
timeouts = robust_mm([-1, -1, us(600), -2, us(600)], 80)
two_ok = robust_mm([us(600), us(601), -1, -1, -1], 80, min_valid=2)
fill = fill_pct(d, 1000, 150)
print(json.dumps([d, timeouts, two_ok, fill, quantise(fill, 10), median([3, 1, 2]), median([4, 1, 2, 3])]))
""")
    d, timeouts, two_ok, fill, q, m3, m4 = res
    assert 598 <= d <= 605
    assert timeouts is None            # only 2 of 5 pings answered: not trusted
    assert two_ok in (600, 601)
    assert fill == (1000 - d) * 100 // 850 and q == 50
    assert (m3, m4) == (2, 2)


def test_quantisers_and_conversions(mpy: Mpy) -> None:
    res = run_json(mpy, """
from civic.sense import convert as c
table = [[129084, 120], [215172, 100], [493838, 70], [1835632, 20], [2543476, 0], [3014000, -20]]
print(json.dumps({
  "q10": [c.quantise(v, 10) for v in (0, 4, 5, 44, 45, 96, 100)],
  "deci_20": c.deci_c_from_uv(1835632, table),
  "deci_mid": c.deci_c_from_uv((1835632 + 2543476) // 2, table),
  "deci_hot": c.deci_c_from_uv(100, table),
  "c": [c.c_from_deci(v) for v in (204, 205, -14, -15, -16)],
  "bat": [c.battery_pct(uv, 2, 1, 3300, 4150) for uv in (1500000, 1650000, 1900000, 2075000, 2200000)],
  "lux": c.lux_from_uv(1000000, 300),
  "ma": [c.ma_from_uv(260000, 1000, 0), c.ma_from_uv(5000, 1000, 10000)],
  "mm": c.echo_us_to_mm(5831),
}))
""")
    assert res["q10"] == [0, 0, 10, 40, 50, 100, 100]
    assert res["deci_20"] == 200 and res["deci_mid"] == 100 and res["deci_hot"] == 1200
    assert res["c"] == [20, 21, -1, -2, -2]
    assert res["bat"] == [0, 0, 58, 100, 100]
    assert res["lux"] == 300 and res["ma"] == [260, 0] and res["mm"] == 1000


def test_fire_alarm_on_fast_rise_and_on_threshold(mpy: Mpy) -> None:
    res = run_json(mpy, """
from civic.sense.detect import FireDetector
f = FireDetector(70, 5)
slow = [f.update(d, t) for d, t in [(200, 0), (210, 300), (220, 600)]]   # 1 degree per 5 min: no alarm
fast = f.update(220 + 300, 900)        # +30 degrees in 5 min (6 per min): alarm
again = f.update(560, 1200)            # still burning: no second alarm
s = f.state()
g = FireDetector(70, 5); g.restore(s)  # after deep sleep
clear = g.update(300, 1500)            # cooled down: clears, no alarm
g2 = FireDetector(70, 5)
hot = g2.update(700, 0)                # first reading already at threshold
print(json.dumps([slow, fast, again, g.active, clear, hot]))
""")
    assert res == [[False, False, False], True, False, False, False, True]


def test_a_rate_of_rise_is_judged_over_30_s_at_least(mpy: Mpy) -> None:
    """Review: two readings a second apart (a reading late by a clock set forward, then the next on time)
    made 0.1 degree of ADC noise a rise of 6 degrees a minute: a fire alarm. A real fast rise still trips."""
    res = run_json(mpy, """
from civic.sense.detect import FireDetector
noise = FireDetector(70, 5)
noise.update(588, 179)
one_step = noise.update(589, 180)      # +0.1 degree in 1 s
tiny = FireDetector(70, 5)
tiny.update(588, 0)
soon = tiny.update(600, 10)            # +1.2 degrees in 10 s: 2.4 a minute over 30 s
burn = FireDetector(70, 5)
burn.update(300, 0)
flash = burn.update(330, 5)            # +3 degrees in 5 s: over 30 s still 6 a minute
slow = FireDetector(70, 5)
slow.update(300, 0)
minute = slow.update(360, 60)          # +6 degrees in a minute: as before
print(json.dumps([one_step, soon, flash, minute]))
""")
    assert res == [False, False, True, True]


def test_a_fire_still_burning_is_announced_again_every_6_hours(mpy: Mpy) -> None:
    """The gateway keeps an alarm open for 24 h: a bin still burning a day later must say so again."""
    res = run_json(mpy, """
from civic.sense.detect import FireDetector, FIRE_REPEAT_S
f = FireDetector(70, 5)
first = f.update(850, 1000)
burning = [f.update(850, 1000 + t) for t in (60, FIRE_REPEAT_S - 1)]
again = f.update(850, 1000 + FIRE_REPEAT_S)
g = FireDetector(70, 5); g.restore(f.state())               # deep sleep keeps when it was announced
slept = [g.update(850, 1000 + FIRE_REPEAT_S + 600), g.update(850, 1000 + 2 * FIRE_REPEAT_S)]
old = FireDetector(70, 5); old.restore([850, 1000, True])    # state written by older firmware
older = [old.update(850, 2000), old.update(850, 2000 + FIRE_REPEAT_S - 1), old.update(850, 2000 + FIRE_REPEAT_S)]
back = FireDetector(70, 5); back.update(850, 50000)          # a time sync sets the clock back an hour
set_back = [back.update(850, 46400), back.update(850, 46400 + FIRE_REPEAT_S - 1), back.update(850, 46400 + FIRE_REPEAT_S)]
cooled = FireDetector(70, 5); cooled.update(850, 0); cooled.update(300, 600)
after = cooled.update(300, FIRE_REPEAT_S + 600)              # cleared: nothing more to announce
print(json.dumps([FIRE_REPEAT_S, first, burning, again, slept, older, set_back, after]))
""")
    assert res == [21600, True, [False, False], True, [False, True], [False, False, True],
                   [False, False, True], False]


def test_lamp_failure_when_current_is_zero_at_level_80(mpy: Mpy) -> None:
    res = run_json(mpy, """
from civic.sense.detect import LampMonitor
m = LampMonitor(ma_full=260, tolerance_pct=30, min_level=10, confirm=3)
ok = [m.update(80, 205) for _ in range(5)]          # 208 mA expected: fine
dead = [m.update(80, 0) for _ in range(4)]          # no current at level 80
failed = m.failed
recovered = m.update(80, 210)
soft_start = [m.update(100, 90), m.update(100, 250)]  # one low reading after a level change: no alarm
stuck_on = [m.update(0, 260) for _ in range(3)]       # commanded off, still drawing full current
dim_ok = m.update(5, 10)
print(json.dumps([ok, dead, failed, recovered, m.failed, soft_start, stuck_on, dim_ok]))
""")
    ok, dead, failed, recovered, failed_after, soft_start, stuck_on, dim_ok = res
    assert ok == [False] * 5
    assert dead == [False, False, True, False]   # trips once, after 3 confirmations
    assert failed is True and recovered is False and failed_after is False
    assert soft_start == [False, False]
    assert stuck_on == [False, False, True]
    assert dim_ok is False


def test_dimming_schedule_at_0200_and_motion_boost(mpy: Mpy) -> None:
    res = run_json(mpy, """
from civic.sense.schedule import Dimmer, scheduled_level, minute_of_day
sched = [[0, 40], [300, 70], [480, 0], [1020, 100], [1320, 70]]
day = 1767225600                     # 2026-01-01 00:00 UTC
at = lambda h, m: day + h * 3600 + m * 60
d = Dimmer(sched, 60, 30, 60, 100, 120)   # local = UTC + 1 h
d.update_light(5)                          # dark
levels = {
  "0200": d.level(at(1, 0), None),         # 02:00 local
  "2230": d.level(at(21, 30), None),
  "1800": d.level(at(17, 0), None),
  "0600": d.level(at(5, 0), None),
  "boost": d.level(at(1, 0), 30000),      # motion 30 s ago, courtesy 120 s
  "after": d.level(at(1, 0), 130000),     # courtesy over
}
dusk = [d.update_light(45), d.update_light(70), d.update_light(45), d.update_light(20)]  # hysteresis
levels["light"] = d.level(at(1, 0), 0) if not d.update_light(500) else -1
d.update_light(5)
d.configure({"courtesy_s": 10, "boost_level": 90, "dim_schedule": [[0, 20]], "junk": 1})
levels["reconf"] = [d.level(at(1, 0), None), d.level(at(1, 0), 5000), d.level(at(1, 0), 20000)]
d.configure({"dim_schedule": [[0, 250]], "boost_level": -1})   # invalid: ignored
levels["bad_conf"] = d.level(at(1, 0), 5000)
print(json.dumps([levels, dusk, minute_of_day(at(23, 30), 60), scheduled_level(sched, 1439)]))
""")
    levels, dusk, minute, late = res
    assert levels["0200"] == 40 and levels["2230"] == 70 and levels["1800"] == 100 and levels["0600"] == 70
    assert levels["boost"] == 100 and levels["after"] == 40
    assert dusk == [True, False, False, True]
    assert levels["light"] == 0
    assert levels["reconf"] == [20, 90, 20] and levels["bad_conf"] == 90
    assert minute == 30 and late == 70


def test_energy_per_hour(mpy: Mpy) -> None:
    res = run_json(mpy, """
from civic.sense.energy import EnergyIntegrator
e = EnergyIntegrator()
h = 1767225600                      # an hour boundary
done = []
t = h
while t < h + 2 * 3600 + 30:
    mw = 60000 if t < h + 3600 else 30000     # 60 W for an hour, then 30 W
    done += e.sample(t, mw)
    t += 5
partial = e.mwh()
gap = e.sample(t + 3600 * 5, 1000)             # device was off 5 h: current hour closed as is
print(json.dumps([done, partial, gap, e.mwh()]))
""")
    done, partial, gap, fresh = res
    assert done == [[1767225600, 60000], [1767229200, 30000]]
    assert partial == 30000 * 25 // 3600   # last sample at +25 s into the third hour
    assert gap == [[1767232800, partial]] and fresh == 0


def test_mean_and_period_start(mpy: Mpy) -> None:
    res = run_json(mpy, """
from civic.sense.window import Mean, period_start
m = Mean()
empty = m.take()
for v in (1, 2, 2): m.add(v)
print(json.dumps([empty, m.take(), m.take(), period_start(1767226499, 900), period_start(1767226500, 900)]))
""")
    assert res == [None, 2, None, 1767225600, 1767226500]


def test_period_for_keeps_the_current_period_when_the_clock_is_set_back_a_little(mpy: Mpy) -> None:
    res = run_json(mpy, """
from civic.sense.window import STEP_BACK_S, period_for
w = 1767226500                                   # a 15-min window start
print(json.dumps([STEP_BACK_S,
                  period_for(None, w - 5, 900),      # first sample: its own period
                  period_for(w, w + 899, 900),       # same window
                  period_for(w, w + 900, 900),       # forward into the next one
                  period_for(w, w - 5, 900),         # set back 5 s across the boundary: stays
                  period_for(w, w - STEP_BACK_S, 900),
                  period_for(w, w - STEP_BACK_S - 1, 900),   # set back further: the earlier period
                  period_for(w, w - 86400, 900)]))
""")
    step, first, same, nxt, small, edge, large, far = res
    w = 1767226500
    assert step == 300
    assert first == w - 900 and same == w and nxt == w + 900
    assert small == w and edge == w
    assert large == w - 900 and far == w - 86400


def test_energy_a_small_step_back_keeps_the_hour_and_reports_it_once(mpy: Mpy) -> None:
    res = run_json(mpy, """
from civic.sense.energy import EnergyIntegrator
h = 1767225600                       # an hour boundary
e = EnergyIntegrator()
done = []
for t in range(h - 600, h + 30, 5):
    done += e.sample(t, 36000)       # 36 W: 10 mWh per second
after_boundary = list(done)
# time sync sets the clock back 15 s (h+25 -> h+10), into the hour already reported, then it runs on
for t in range(h + 10, h + 3600 + 5, 5):
    done += e.sample(t, 36000)
small = list(done)
f = EnergyIntegrator()
bigdone = []
for t in (h + 1000, h + 1005, h + 1005 - 301):   # set back more than STEP_BACK_S: hour closed
    bigdone += f.sample(t, 36000)
print(json.dumps([after_boundary, small, bigdone]))
""")
    after_boundary, small, bigdone = res
    h = 1767225600
    assert after_boundary == [[h - 3600, 600 * 10]]         # the last 10 min of the previous hour
    hours = [x[0] for x in small]
    assert hours == [h - 3600, h]                          # no second report of either hour
    # the hour holds the 25 s before the step and the 3590 s after it: every second the device
    # ran once (the step itself adds nothing)
    assert small[1][1] == (25 + 3590) * 10
    assert bigdone == [[h, 5 * 10]]
