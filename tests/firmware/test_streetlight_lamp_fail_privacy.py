"""The lamp_fail alarm and the window's ``lamp`` field must not tell when someone passed under the
lamp. Real MicroPython, fake hardware and clock (see test_apps_streetlight.py).

The motion boost raises the lamp to 100 % for the courtesy time. A lamp judged at the level it is
commanded to, boost included, looks healthy or failed depending on the boost: with a driver stuck at
full power every pass cleared the failure and its end raised a new alarm, stamped to the minute,
outside the noisy ``mot`` count. Each scenario here runs twice, with and without passes, and the
alarms and ``lamp`` fields must be the same.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from hil.sim.mprun import MpResult
from test_apps_support import prelude

Mpy = Callable[..., MpResult]
START = 1767225600 + 3600  # 02:00 local: the schedule says 40 %

SETUP = """
from civic.apps.streetlight import StreetlightApp
pol, rep, rel = pipeline("streetlight")
pir, light, lamp, cur = FakePin(), FakeADC(10000), FakePWM(), FakeADC(0)
hw = FakeHW(pir=pir, light=light, lamp=lamp, lamp_current=cur)
clock = FakeClock(START)
app = StreetlightApp(hw, CFG, pol, rep, rel, clock, log=lambda s: None)
app.attach()
def healthy(duty):
    return 260 * duty * 1000 // 65535          # 260 mA at 100 %, proportionally less when dimmed
def run(seconds, driver, passes):
    # one tick a second; the PIR fires at the given seconds from START
    i = 0
    while clock.time() < START + seconds:
        if i < len(passes) and clock.time() >= START + passes[i]:
            pir.pulse(); i += 1
        cur.uv = driver(lamp.duty or 0, clock.time() - START)
        app.tick(clock.ms)
        clock.ms += 1000
    return {"alarms": [[b["w"], b["a"]] for b in rep.of("alarm")],
            "lamp": [[b["w"], b["m"]["lamp"]] for b in rep.of("win") if "lamp" in b["m"]],
            "boosts": app.pir.count}  # passes counted (no mot release within 6 h)
"""

# passes under the lamp, in seconds from START: some close together, one near a window's end
PASSES = [637, 1513, 2451, 2500, 2690, 3590, 4000, 4200]


def run_both(mpy: Mpy, seconds: int, driver: str) -> tuple[Any, Any]:
    """The same night with and without the passes; ``driver(duty, t)`` gives the lamp's microvolts."""
    out = []
    for passes in (PASSES, []):
        code = (prelude("streetlight-esp32") + f"START = {START}\n" + SETUP + driver
                + f"\nprint(json.dumps(run({seconds}, driver, {passes!r})))\n")
        out.append(json.loads(mpy(code, seed=3).stdout.strip().splitlines()[-1]))
    return out[0], out[1]


def test_a_driver_stuck_at_full_power_alarms_once_whatever_the_passes(mpy: Mpy) -> None:
    # a broken dimming line: full current whenever the lamp is on, whatever its level
    with_passes, without = run_both(mpy, 5400, """
def driver(duty, t):
    return 260 * 1000 if duty else 0
""")
    assert with_passes["boosts"] >= 6                      # the passes did boost the lamp
    assert len(with_passes["alarms"]) == 1 and with_passes["alarms"][0][1] == ["lamp_fail"]
    assert with_passes["alarms"] == without["alarms"]      # the same minute: at the first readings
    assert with_passes["alarms"][0][0] < START + 60
    assert with_passes["lamp"] == without["lamp"]
    assert len(with_passes["lamp"]) == 5 and all(bad == 1 for _, bad in with_passes["lamp"])


def test_a_lamp_failing_only_at_full_power_does_not_time_the_passes(mpy: Mpy) -> None:
    # healthy when dimmed, dark at full power: seen only during boosts, so never judged
    with_passes, without = run_both(mpy, 5400, """
def driver(duty, t):
    return 0 if duty >= 65535 else healthy(duty)
""")
    assert with_passes["boosts"] >= 6
    assert with_passes["alarms"] == without["alarms"] == []
    assert with_passes["lamp"] == without["lamp"]
    assert len(with_passes["lamp"]) == 5 and all(bad == 0 for _, bad in with_passes["lamp"])


def test_a_lamp_dying_during_a_boost_alarms_at_the_same_minute_as_without_the_pass(mpy: Mpy) -> None:
    # dark at every level from 640 s, 3 s into the first pass's boost: that is bad at 40 % too
    with_passes, without = run_both(mpy, 1800, """
def driver(duty, t):
    return 0 if t >= 640 else healthy(duty)
""")
    assert len(with_passes["alarms"]) == 1
    assert with_passes["alarms"] == without["alarms"]
    assert START + 600 <= with_passes["alarms"][0][0] < START + 720
    assert with_passes["lamp"] == without["lamp"]


def test_a_failure_is_latched_until_an_hour_of_good_readings_and_announced_once_a_day(mpy: Mpy) -> None:
    out = mpy("""
import json
from civic.sense.detect import LAMP_CLEAR_S, LAMP_REPEAT_S, LampMonitor
m = LampMonitor(260, 30, 10, confirm=3, clear_s=LAMP_CLEAR_S, repeat_s=LAMP_REPEAT_S)
t = [0]
def feed(ma, n, level=40):
    # n readings a minute apart at the scheduled level; returns the alarms raised
    out = []
    for _ in range(n):
        if m.update(level, ma, t[0]):
            out.append(t[0])
        t[0] += 60
    return out
first = feed(0, 5)                       # dead: one alarm, after 3 readings
flicker = feed(104, 30) + feed(0, 5)     # back for 30 min, then dead again: still the same failure
still = m.failed
repaired = feed(104, 62)                 # good for over an hour: repaired
cleared = m.failed
again = feed(0, 5)                       # fails again the same day: latched, no second alarm
failed_again = m.failed
feed(104, 62)
t[0] += LAMP_REPEAT_S                    # a day later
next_day = feed(0, 5)
# what a boosted reading says of the scheduled level: only whether it is darker than that
full = m.dark_at(40, 260)                # stuck at full: nothing
dark = m.dark_at(40, 72)                 # below 104 mA - 30 %: darker than 40 % should be
low_ok = m.dark_at(40, 73)
below_min = m.dark_at(5, 0)              # 5 %: too dim to judge
print(json.dumps([first, flicker, still, repaired, cleared, again, failed_again, next_day,
                  full, dark, low_ok, below_min]))
""", seed=1).stdout.strip().splitlines()[-1]
    (first, flicker, still, repaired, cleared, again, failed_again, next_day,
     full, dark, low_ok, below_min) = json.loads(out)
    assert first == [120]
    assert flicker == [] and still is True
    assert repaired == [] and cleared is False
    assert again == [] and failed_again is True
    assert len(next_day) == 1
    assert [full, dark, low_ok, below_min] == [False, True, False, False]
