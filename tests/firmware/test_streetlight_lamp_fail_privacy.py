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
LAMP_CLEAR_S = 3600  # civic.sense.detect: a failure clears after good readings for this long
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


def run_both(mpy: Mpy, seconds: int, driver: str, cfg: str = "", extra: str = "") -> tuple[Any, Any]:
    """The same night with and without the passes; ``driver(duty, t)`` gives the lamp's microvolts.
    ``cfg`` changes CFG before the app is built; ``extra`` (with ``passes`` set) replaces the run."""
    out = []
    for passes in (PASSES, []):
        tail = (f"\npasses = {passes!r}\n" + extra) if extra else (
            f"\nprint(json.dumps(run({seconds}, driver, {passes!r})))\n")
        code = prelude("streetlight-esp32") + f"START = {START}\n" + cfg + SETUP + driver + tail
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


def test_a_lamp_that_stays_dead_has_an_open_alarm_and_lamp_1_day_and_night(mpy: Mpy) -> None:
    # Dead for good over four days with daylight (dusk 2 min earlier each day). In daylight the lamp
    # is off, where a dead lamp reads like a good one: that must not count as repaired, or ``lamp``
    # went 0 each morning, the gateway closed the alarm and the next dusk raised none.
    from gateway.web.snapshot import ALARM_OPEN_S
    start = 1767225600 + 12 * 3600  # 12:00 UTC
    code = prelude("streetlight-esp32") + f"START = {start}\n" + SETUP + """
def dark(t):
    d = t // 86400; s = t % 86400          # s = 0 at 12:00 UTC
    return 7 * 3600 - d * 120 <= s < 17 * 3600
while clock.time() < START + 4 * 86400:
    light.uv = 10000 if dark(clock.time() - START) else 1000000
    cur.uv = 0
    app.tick(clock.ms)
    clock.ms += 5000
print(json.dumps({"alarms": [b["w"] for b in rep.of("alarm")],
                  "wins": [[b["w"], b["l"], b["m"]["lamp"], b["m"]["lvl"]] for b in rep.of("win") if "lamp" in b["m"]]}))
"""
    out = json.loads(mpy(code, seed=3).stdout.strip().splitlines()[-1])
    alarms, wins = out["alarms"], out["wins"]
    first = alarms[0]
    assert start + 7 * 3600 <= first < start + 7 * 3600 + 120  # at the first dusk
    after = [(w + length, bad, lvl) for w, length, bad, lvl in wins if w >= first]
    assert any(lvl == 0 for _, _, lvl in after) and any(lvl > 0 for _, _, lvl in after)  # days and nights
    assert all(bad == 1 for _, bad, _ in after)
    # at every window's end an alarm is open by the gateway's rule (raised in the last 24 h)
    assert all(any(end - ALARM_OPEN_S <= a <= end for a in alarms) for end, _, _ in after)


def test_a_healthy_driver_fading_down_slowly_does_not_time_the_passes(mpy: Mpy) -> None:
    # a 30 s fade from 100 % to 40 % (2 %/s), sampled every second and every 5 s: the fade after
    # each boost must not read as a failure
    driver = """
eff = [40.0 * 65535 / 100]
def driver(duty, t):
    e = eff[0]
    step = 2 * 65535 / 100
    e = min(duty, e + step) if e < duty else max(duty, e - step)
    eff[0] = e
    return healthy(int(e))
"""
    for interval in (1, 5):
        with_passes, without = run_both(mpy, 5400, driver, f"CFG['sleep']['interval_s'] = {interval}\n")
        assert with_passes["boosts"] >= 6
        assert with_passes["alarms"] == without["alarms"] == []
        assert with_passes["lamp"] == without["lamp"]
        assert len(with_passes["lamp"]) == 5 and all(bad == 0 for _, bad in with_passes["lamp"])


def test_a_driver_tripping_at_full_power_shows_at_most_the_first_pass_of_the_day(mpy: Mpy) -> None:
    # trips at full power and stays dark 2 min whatever the level: each boost after a pass would dim
    # the lamp, and show in wh, lamp or an alarm. After the first, boosts stay off for a day.
    driver = """
trip = [None]
def driver(duty, t):
    if duty >= 65535 and trip[0] is None:
        trip[0] = t
    if trip[0] is not None and t - trip[0] < 120:
        return 0
    trip[0] = None
    return healthy(duty)
"""
    seconds = 4 * 3600
    with_passes, without = run_both(mpy, seconds, driver, "", extra="""
out = run(%d, driver, passes)
out["wh"] = [[b["w"], b["m"]["wh"]] for b in rep.of("hour")]
clock.ms += 86400 * 1000          # a day later the boost is tried again at a pass
pir.pulse(); app.tick(clock.ms)
out["next_day"] = lamp.duty
print(json.dumps(out))
""" % seconds)
    first = START + PASSES[0]
    assert len(with_passes["alarms"]) <= 1 and without["alarms"] == []
    # the first pass's trip shows in its hour's wh and in lamp until the hour's latch clears; the
    # later passes (seven, four of them within the next hour) show nowhere
    for key, later in (("wh", START + 3600), ("lamp", first + 120 + LAMP_CLEAR_S + 900)):
        assert [r for r in with_passes[key] if r[0] >= later] == [r for r in without[key] if r[0] >= later]
        assert len([r for r in with_passes[key] if r[0] >= later]) >= 2
    assert with_passes["next_day"] == 65535


def test_below_min_level_readings_never_repair_and_a_failed_lamp_is_announced_again(mpy: Mpy) -> None:
    out = mpy("""
import json
from civic.sense.detect import LAMP_CLEAR_S, LAMP_REPEAT_S, LampMonitor
m = LampMonitor(260, 30, 10, confirm=3, clear_s=LAMP_CLEAR_S, repeat_s=LAMP_REPEAT_S)
alarms = []
t = 0
for i in range(3):
    if m.update(40, 0, t): alarms.append(t)
    t += 60
mid = None
while t < 3 * LAMP_REPEAT_S:                  # a day of readings with the lamp off (level 0)
    if m.update(0, 0, t): alarms.append(t)
    if m.repeat(t): alarms.append(t)
    t += 60
print(json.dumps([alarms, m.failed, LAMP_REPEAT_S]))
""", seed=1).stdout.strip().splitlines()[-1]
    alarms, failed, repeat_s = json.loads(out)
    assert failed is True
    assert alarms[0] == 120 and len(alarms) == 3
    assert all(b - a == repeat_s for a, b in zip(alarms, alarms[1:]))
