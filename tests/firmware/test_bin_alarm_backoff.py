"""The bin's back-off for an unacknowledged alarm, under real MicroPython (simulator).

An alarm the gateway did not acknowledge is offered again at timer wakes on the RTC grid of a retry
step that starts at ``ALARM_RETRY_S`` (120 s) and doubles after each unacknowledged slot up to
``ALARM_RETRY_MAX_S`` (960 s). Until 2026-12-07 it was retried every 120 s for ever: with no
gateway in range the radio was on a quarter of the time (then, for a few hours, the cap was 3600 s:
a fire alarm during a watch out of reach waited up to an hour for a returning gateway). Each wake below rebuilds the app from its
state file (a deep-sleep wake resets the chip), so the back-off must survive in flash.
"""

from __future__ import annotations

import json
from typing import Any

from test_apps_bin import T0, Mpy, run_app, script

# Events, in seconds after START: "lid" (a lid wake), "tip" (a tilt wake: the bin tipped over),
# "up" (the bin is put upright, no wake), "hot" / "cool" (the temperature from then on, no wake).
# The gateway acknowledges while it is in range, GW = [from, to) or None.
SIM = """
PRE
EV = %r
GW = %r
END = %r
HOT, COOL = 493838, 1835632                # 70 C (the fire threshold), 20 C
started = []
lid_radio = []
acked = []
steps = []                                 # [t, retry step, next slot] saved after each timer wake
plan = [START]
def sleeper(ms, pins):
    plan[0] = clock.time() + ms // 1000
def in_range(t):
    return GW is not None and START + GW[0] <= t < START + GW[1]
def wake(by_pin, t):
    global app
    app = make_app()                       # the chip resets: the app is rebuilt from its state file
    clock.set_time(t)
    n = len(started)
    def pending():
        if in_range(t) and len(rep.outbox):
            gateway_ack(rep.seq.last)
            acked.append(t - START)
        return len(rep.outbox)
    drive(app.run_deep(by_pin, pending, sleeper, linger_s=0, start_links=lambda: started.append(t - START)))
    return len(started) > n
todo = sorted(EV)
while plan[0] < START + END:
    if todo and START + todo[0][0] < plan[0]:
        at, what = todo.pop(0)
        if what == "lid":
            lid.v = 1
            lid_radio.append(wake(True, START + at))
            lid.v = 0
        elif what == "tip":
            tilt.v = 1
            wake(True, START + at)
        elif what == "up":
            tilt.v = 0
        else:
            temp.uv = HOT if what == "hot" else COOL
    else:
        wake(False, plan[0])
        st = json.loads(atomic.read(STATE))
        steps.append([clock.time() - START, st["ars"], st["ard"] - START if st["ard"] else 0])
print(json.dumps([started, lid_radio, acked, [[b["a"], b["w"] - START] for b in rep.of("alarm")], steps]))
"""


def sim(mpy: Mpy, events: list[list[Any]], gw: list[int] | None = None, end: int = 6 * 3600, pre: str = "") -> Any:
    return run_app(mpy, T0, SIM.replace("PRE", pre) % (events, gw, end))


def readings(end: int, first: int = 0) -> list[int]:
    return list(range(first, end, 300))


def test_retries_back_off_on_the_rtc_grid_with_no_gateway(mpy: Mpy) -> None:
    # tipped over at +200: the tip wake sends it; then slots at the next multiple of a step that
    # doubles after each one: 120 s -> 240 -> 480 -> 960 (cap), 960, ...
    started, lid_radio, acked, alarms, steps = sim(mpy, [[200, "tip"], [230, "up"]], end=8 * 3600)
    assert alarms == [[["tip"], 180]]                      # w: rounded down to the minute
    retries = [240, 480] + list(range(960, 8 * 3600, 960))
    assert retries[:7] == [240, 480, 960, 1920, 2880, 3840, 4800]
    assert started == sorted(set(readings(8 * 3600) + [200] + retries))
    assert acked == []
    # the step and the next slot kept in the state file after each retry slot
    after = {t: [s, d] for t, s, d in steps}
    assert [after[t] for t in retries[:7]] == [[240, 480], [480, 960], [960, 1920], [960, 2880],
                                               [960, 3840], [960, 4800], [960, 5760]]
    assert all(after[t] == [960, t + 960] for t in retries[2:])   # at the cap: every 16 min
    # a reading between two slots offers the alarm too but is no retry: the step stays
    assert after[300] == [240, 480] and after[600] == [480, 960] and after[3900] == [960, 4800]
    # radio starts in the 8 h: 96 readings, the tip wake and 26 slots off the readings (31 slots, the
    # multiples of 4800 s also readings); with a slot every 120 s it was 96 + 1 + 191, with the 1-h
    # cap 96 + 1 + 5
    assert len(retries) == 31 and len(started) == 96 + 1 + 26


def test_an_acknowledged_alarm_resets_the_step(mpy: Mpy) -> None:
    # the alarm backs off to the cap (960 s) with no gateway; a gateway passing at +2400..+2500 takes
    # it at the reading at +2400: no more slots, the step is back at 120 s; a later tip (gateway
    # gone) is retried from 120 s again
    started, lid_radio, acked, alarms, steps = sim(
        mpy, [[200, "tip"], [230, "up"], [5030, "tip"], [5050, "up"]], gw=[2400, 2500], end=3 * 3600)
    assert acked == [2400]
    after = {t: [s, d] for t, s, d in steps}
    assert after[2100] == [960, 2880]                      # backed off before the gateway came
    assert after[2400] == [120, 0]                         # acknowledged: reset, no slot planned
    assert [t for t in started if 2400 < t < 5030] == readings(5030, 2700)   # readings only
    assert 5030 in started                                 # the new alarm goes at its tilt wake
    retries = [5040, 5280, 5760, 6720, 7680, 8640, 9600, 10560]   # +9600 is a reading too
    assert [t for t in started if t > 5030 and (t % 300 or t in retries)] == retries
    assert [after[t] for t in retries] == [[240, 5280], [480, 5760], [960, 6720], [960, 7680], [960, 8640],
                                           [960, 9600], [960, 10560], [960, 11520]]


def test_a_new_alarm_while_one_waits_is_sent_at_once_and_retried_from_the_shortest_step(mpy: Mpy) -> None:
    # a fire alarm at the reading at +300 (hot for one reading) backs off to the cap (960 s); the
    # bin is tipped over at +2500 while the fire alarm still waits: the tip alarm goes at the tilt
    # wake, and its retries start again at 120 s (+2520, +2640), not at the fire's next slot (+2880)
    started, lid_radio, acked, alarms, steps = sim(
        mpy, [[250, "hot"], [310, "cool"], [2500, "tip"], [2530, "up"]], end=4 * 3600)
    assert alarms == [[["fire"], 300], [["tip"], 2460]]
    assert 300 in started and 2500 in started              # each alarm at once where it is raised
    after = {t: [s, d] for t, s, d in steps}
    # fire: slots +360 (also the watch reading), 480, 960 (also a reading), 1920
    assert [after[t] for t in (360, 480, 960, 1920)] == [[240, 480], [480, 960], [960, 1920], [960, 2880]]
    assert [t for t in started if 1920 < t < 2500 and (t - 60) % 300] == []   # readings (+60 + 300 k) only
    # tip, raised while the fire waits: 120 s again, then doubling to the cap
    retries = [2520, 2640, 2880] + list(range(3840, 4 * 3600, 960))
    assert [t for t in started if t > 2500 and ((t - 60) % 300 or t in retries)] == retries
    assert [after[t] for t in retries[:5]] == [[240, 2640], [480, 2880], [960, 3840], [960, 4800], [960, 5760]]


LEGACY = """
atomic.makedirs("/state")
seq = rep.alarm(["tip"], START - 30)       # queued by older firmware, never acknowledged
atomic.write(STATE, json.dumps(dict({"next": START, "alarm": SAVED}, **EXTRA)).encode())
app = make_app()
loaded = [app.state["alarm"], seq, app.state["ars"], app.state["ard"]]
print(json.dumps(loaded))
"""


def _legacy(mpy: Mpy, saved: str, extra: dict[str, Any]) -> Any:
    pre = LEGACY.replace("SAVED", saved).replace("EXTRA", repr(extra))
    out = mpy(script(T0, pre + SIM.replace("PRE", "") % ([], None, 4 * 3600)), seed=11).stdout.strip().splitlines()
    return json.loads(out[-2]), json.loads(out[-1])


def test_state_from_older_firmware_without_the_back_off_loads_and_backs_off(mpy: Mpy) -> None:
    # state saved before the back-off: no "ars"/"ard"; the alarm as its seq, or True (older still);
    # and a step or slot that cannot be (flash damage, hand edits): each loads with the shortest
    # step and no slot planned, and the retries back off from the next slot of the 120-s grid.
    # State saved with the 1-h cap (a step of 1920 or 3600 s, its slot up to an hour ahead) loads
    # with the shortest step and no slot either (the far slot held a watch's alarm back until then:
    # test_bin_fire_radio)
    cases = [("seq", {}, 0), ("True", {}, 0), ("seq", {"ars": 0, "ard": 77}, 0), ("seq", {"ars": "x", "ard": True}, 0),
             ("seq", {"ars": 10 ** 9, "ard": -120}, 0), ("seq", {"ars": 3600, "ard": T0 + 3600}, 0),
             ("seq", {"ars": 1920, "ard": T0 + 1920}, 0)]
    retries = [120, 240, 480] + list(range(960, 4 * 3600, 960))
    for saved, extra, kept in cases:
        loaded, (started, lid_radio, acked, alarms, steps) = _legacy(mpy, saved, extra)
        alarm, seq, ars, ard = loaded
        assert (alarm is True) if saved == "True" else (alarm == seq and not isinstance(alarm, bool))
        assert [ars, ard] == [120, kept], (saved, extra)
        assert started == sorted(set(readings(4 * 3600) + retries)), (saved, extra)
        assert steps[0] == [0, 120, 120]          # first wake: the slot planned, no back-off yet


def test_with_rare_readings_a_returning_gateway_gets_the_alarm_within_the_longest_step(mpy: Mpy) -> None:
    # readings every 2 h (interval_s 7200): the retry slots are what brings the alarm to a gateway
    # back in range at +8641, a second after the slot at +8640; the step is 960 s by then, so it goes
    # at the next slot (+9600), 959 s later: within ALARM_RETRY_MAX_S (with the 1-h cap: +10800);
    # then no more slots
    pre = 'CFG["sleep"]["interval_s"] = 7200'
    started, lid_radio, acked, alarms, steps = sim(mpy, [[200, "tip"], [230, "up"]], gw=[8641, 20000], pre=pre)
    assert acked[0] == 9600 and acked[0] - 8641 < 960      # (later: the gateway takes the windows)
    assert started == [0, 200, 240, 480, 960, 1920, 2880, 3840, 4800, 5760, 6720, 7200, 7680, 8640, 9600, 14400]
