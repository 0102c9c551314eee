"""Tick stamps across the 2**30 ms wrap of MicroPython's ``ticks_ms`` (about 12.4 days; a
``ticks_diff`` is valid within 2**29 ms, about 6.2 days). Real MicroPython, a fake clock whose ticks
wrap as an ESP32's do. A stamp kept for days after it was needed (the last pass, the last counted
event, the end of a boost) read as recent or in the future: the lamp stayed boosted, passes and lid
openings were not counted, lux stopped following the sky.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from hil.sim.mprun import MpResult
from test_apps_support import prelude

Mpy = Callable[..., MpResult]
T0 = 1767225600  # 2026-01-01 00:00 UTC

WRAP = """
class WrapClock(FakeClock):
    def ticks_ms(self):
        return self.ms & 0x3FFFFFFF      # ESP32: ticks_ms wraps at 2**30
"""


def run(mpy: Mpy, board: str, body: str) -> Any:
    out = mpy(prelude(board) + WRAP + body, seed=5).stdout.strip().splitlines()
    return json.loads(out[-1])


def test_a_streetlight_quiet_for_7_days_dims_counts_and_follows_the_sky(mpy: Mpy) -> None:
    res = run(mpy, "streetlight-esp32", f"""
from civic.apps.streetlight import StreetlightApp
pol, rep, rel = pipeline("streetlight")
pir, light, lamp, cur = FakePin(), FakeADC(10000), FakePWM(), FakeADC(0)
hw = FakeHW(pir=pir, light=light, lamp=lamp, lamp_current=cur)
clock = WrapClock({T0} + 3600)          # 02:00 local: 40 %
app = StreetlightApp(hw, CFG, pol, rep, rel, clock, log=lambda s: None)
app.attach()
def step(ms):
    cur.uv = 260 * (lamp.duty or 0) * 1000 // 65535
    app.tick(clock.ticks_ms())
    clock.ms += ms
def lvl():
    return None if lamp.duty is None else round(lamp.duty * 100 / 65535)
for _ in range(12): step(5000)
pir.pulse(); step(5000)
boost = lvl()
for _ in range(40): step(5000)           # the courtesy time ends: the boost too
# quiet for 7 days (over 2**29 ms), a sample a minute, until 02:30 local
while clock.time() < {T0} + 7 * 86400 + 5400:
    step(60000)
wrapped = clock.ticks_ms() < clock.ms
level = (lvl(), app.dimmer.scheduled(clock.time()))
since = app.pir.since_event_ms(clock.ticks_ms())
before = app.pir.count
for _ in range(3):                       # three people 30 s apart (refractory 10 s)
    pir.pulse(); step(30000)
counted = app.pir.count - before
for _ in range(40): step(5000)           # courtesy over again
light.uv = 60000                         # the sky brightens: 18 lx, still dark for the lamp
while clock.time() % 900 != 0: step(5000)
end = clock.time() + 900
while clock.time() <= end + 5: step(5000)
last = [b["m"]["lux"] for b in rep.of("win") if b["l"] == 900 and b["w"] == end - 900]
print(json.dumps([boost, wrapped, level, since, counted, last]))
""")
    boost, wrapped, level, since, counted, last = res
    assert boost == 100 and wrapped is False    # not wrapped yet, but the pass's stamp is > 2**29 ms old
    assert level == [40, 40]                    # not stuck at the boost
    assert since is None
    assert counted == 3
    assert last == [20]                         # 18 lx, quantised to 10 lx


def test_a_streetlight_across_the_tick_wrap_keeps_its_courtesy_time(mpy: Mpy) -> None:
    # a pass 30 s before ticks wrap: the boost holds 120 s across the wrap, then ends
    res = run(mpy, "streetlight-esp32", f"""
from civic.apps.streetlight import StreetlightApp
pol, rep, rel = pipeline("streetlight")
pir, light, lamp, cur = FakePin(), FakeADC(10000), FakePWM(), FakeADC(0)
hw = FakeHW(pir=pir, light=light, lamp=lamp, lamp_current=cur)
clock = WrapClock({T0} + 3600 - ((1 << 30) - 60000) // 1000)
clock.ms = (1 << 30) - 60000              # a minute before the wrap, at 02:00 local (40 %)
app = StreetlightApp(hw, CFG, pol, rep, rel, clock, log=lambda s: None)
app.attach()
def step(ms):
    cur.uv = 260 * (lamp.duty or 0) * 1000 // 65535
    app.tick(clock.ticks_ms())
    clock.ms += ms
def lvl():
    return round((lamp.duty or 0) * 100 / 65535)
for _ in range(6): step(5000)
pir.pulse(); step(5000)
levels = []
for _ in range(30):                       # 150 s
    levels.append(lvl()); step(5000)
print(json.dumps([levels, app.pir.count, rep.of("alarm")]))
""")
    levels, count, alarms = res
    assert levels[:23] == [100] * 23          # 0..110 s after the pass: boosted (courtesy 120 s)
    assert levels[-3:] == [40, 40, 40]
    assert count == 1 and alarms == []


def test_an_awake_bin_counts_lid_openings_after_6_days_without_one(mpy: Mpy) -> None:
    # the lid counter as run_awake polls it, at every wake (at most feed_ms apart)
    res = run(mpy, "bin-esp32c3", f"""
from civic.apps.bin import BinApp
pol, rep, rel = pipeline("bin")
trig, echo, temp, bat, tilt, lid = FakePin(), FakePin(), FakeADC(1835632), FakeADC(1900000), FakePin(0), FakePin(0)
hw = FakeHW(trig=trig, echo=echo, pulse_us=lambda p, l, t: 3000, temp=temp, battery=bat, tilt=tilt, lid=lid)
clock = WrapClock({T0})
async def no_pause(ms):
    pass
app = BinApp(hw, CFG, pol, rep, rel, clock, state_path="/state/bin.json", pause=no_pause, log=lambda s: None)
c = app.lid_irq
lid.irq(handler=c.irq, trigger=lid.IRQ_RISING)   # as run_awake hooks it
def poll(ms):
    if c.poll(clock.ticks_ms()):
        app.state["lid"] += c.take()
    clock.ms += ms
lid.pulse(); poll(1000)
first = app.state["lid"]
end = clock.ms + int(6.3 * 86400 * 1000)
while clock.ms < end:
    poll(app.feed_ms)
counts = []
for _ in range(3):                        # three openings 30 s apart (refractory 5 s)
    lid.pulse(); poll(30000)
    counts.append(app.state["lid"])
lid.pulse(); poll(1000); lid.pulse(); poll(1000)   # a flap 1 s after: within the refractory
print(json.dumps([first, counts, app.state["lid"], c.since_event_ms(clock.ticks_ms())]))
""")
    first, counts, total, since = res
    assert first == 1
    assert counts == [2, 3, 4]
    assert total == 5
    assert since is None


def test_event_counter_forgets_its_stamps_once_they_are_not_needed(mpy: Mpy) -> None:
    out = mpy("""
import json, time
from civic.sense.events import STAMP_MAX_MS, EventCounter
c = EventCounter(10000, keep_ms=120000)
t = time.ticks_add(0, -5000)             # 5 s before the wrap
c.irq(); c.poll(t)
near = c.since_event_ms(time.ticks_add(t, 119000))     # across the wrap, inside keep_ms
gone = c.since_event_ms(time.ticks_add(t, 120000))
d = EventCounter(10000)                  # keep_ms None: kept up to STAMP_MAX_MS
d.irq(); d.poll(0)
kept = d.since_event_ms(STAMP_MAX_MS - 1)
lost = d.since_event_ms(STAMP_MAX_MS)
d.irq(); d.poll(STAMP_MAX_MS + 1)
# a counter polled too seldom: a stamp 2**29 + 1 ms old is in the future for ticks_diff
e = EventCounter(10000)
e.irq(); e.poll(0)
stale = time.ticks_add(time.ticks_add(0, 1 << 28), (1 << 28) + 1)
e.irq(); e.poll(stale)
print(json.dumps([near, gone, kept, lost, d.count, e.count, e.since_event_ms(stale)]))
""", seed=1).stdout.strip().splitlines()[-1]
    assert json.loads(out) == [119000, None, (1 << 28) - 1, None, 2, 2, 0]
