"""Bin app behaviour under real MicroPython, with fake hardware and a fake clock.

Readings every 300 s, windows of 900 s, lid released per UTC day. The thermistor table maps
1835632 uV to 20 C and 871419 uV to 50 C; the battery divider halves the cell voltage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from hil.sim.mprun import MpResult
from test_apps_support import prelude

Mpy = Callable[..., MpResult]
T0 = 1767225600  # 2026-01-01 00:00 UTC

SETUP = """
from civic.apps.bin import BinApp
from civic.store import atomic
from civic.store.outbox import Outbox
from civic.store.seq import SeqCounter
from civic.uplink.session import Session
from civic.wire import frame, msgpack
pol, rep, rel = pipeline("bin")
DEV, KEY = "bin-0001", b"k" * 32
class OutboxReporter(RecReporter):
    # the real Reporter (seq, frame, flash outbox); bodies also kept in RAM, as RecReporter does
    def __init__(self, pol):
        RecReporter.__init__(self, pol)
        Reporter.__init__(self, DEV, KEY, pol, SeqCounter("/seq.bin"), Outbox("/outbox"), fw=None)
    def report(self, t, w, l, m, e=None, a=None):
        s = Reporter.report(self, t, w, l, m, e, a)
        self.sent.append(build_body(self.policy, t, w, l, m, e, a))
        return s
rep = OutboxReporter(pol)
session = Session(DEV, KEY, rep.outbox, rep.seq, config_path="/config.json")
def gateway_ack(s):
    # the gateway's cumulative ACK of seq s, handled as a link hands it to the session
    return session.handle(frame.build(frame.ACK, DEV, s, msgpack.encode({}), KEY))
def us(mm):
    return mm * 2000 // 343 + 1
class Echo:
    def __init__(self):
        self.queue = []; self.default = us(575)      # 575 mm: 50 % full
        self.calls = []
    def __call__(self, pin, level, timeout):
        self.calls.append((level, timeout))
        return self.queue.pop(0) if self.queue else self.default
echo_fn = Echo()
trig, echo, temp, bat, tilt, lid = FakePin(), FakePin(), FakeADC(1835632), FakeADC(1900000), FakePin(0), FakePin(0)
hw = FakeHW(trig=trig, echo=echo, pulse_us=echo_fn, temp=temp, battery=bat, tilt=tilt, lid=lid)
clock = FakeClock(START)
async def no_pause(ms):
    pass
def make_app():
    return BinApp(hw, CFG, pol, rep, rel, clock, state_path=STATE, pause=no_pause, log=lambda s: None)
app = make_app()
def drive(coro):
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value
def reading_at(t):
    clock.set_time(t)
    drive(app.cycle())
"""


def script(start: int, body: str, state: str = "/state/bin.json") -> str:
    return prelude("bin-esp32c3") + f"START = {start}\nSTATE = {state!r}\n" + SETUP + body


def run_app(mpy: Mpy, start: int, body: str, seed: int = 11) -> Any:
    out = mpy(script(start, body), seed=seed).stdout.strip().splitlines()
    return json.loads(out[-1])


def test_fill_median_of_pings_rejects_outliers_and_window_report(mpy: Mpy) -> None:
    res = run_app(mpy, T0, """
echo_fn.queue = [us(575), us(120), us(580), -1, us(570)]   # a bag flap and a lost echo
first = drive(app.measure())
calls = len(echo_fn.calls)
for k in range(1, 4):
    reading_at(START + 300 * k)          # readings at 5, 10, 15 min: the third closes the window
reading_at(START + 21600)                # 06:00 closes the fill period (policy release_every_s)
print(json.dumps([first, calls, echo_fn.calls[0], trig.writes[:2], rep.sent]))
""")
    first, calls, call0, trig_writes, sent = res
    fill, deci, tilted, battery = first
    assert fill == (1000 - 575) * 100 // 850 and deci == 200 and tilted is False
    assert battery == 58
    assert calls == 5 and call0 == [1, 30000] and trig_writes == [1, 0]
    # the windows carry no fill; the 6-hour release carries the level at its end, quantised
    assert sent == [{"t": "win", "k": "bin", "w": T0, "l": 900, "m": {"temp": 20, "tilt": 0, "bat": 60}},
                    {"t": "win", "k": "bin", "w": T0 + 900, "l": 900, "m": {"temp": 20, "tilt": 0, "bat": 60}},
                    {"t": "win", "k": "bin", "w": T0, "l": 21600, "m": {"fill": 50}}]


def test_fire_alarm_on_fast_rise_once(mpy: Mpy) -> None:
    res = run_app(mpy, T0, """
reading_at(START + 10)                   # 20 C
temp.uv = 871419                         # 50 C five minutes later: +6 C/min > 5 C/min
reading_at(START + 310)
reading_at(START + 610)                  # still hot: no second alarm
print(json.dumps(rep.of("alarm")))
""")
    assert res == [{"t": "alarm", "k": "bin", "w": T0 + 300, "l": 60, "m": {"temp": 50}, "a": ["fire"]}]


def test_a_bin_still_burning_sends_its_fire_alarm_again(mpy: Mpy) -> None:
    """QA: a bin at 85 C a day after its fire alarm was shown as "ok" (the gateway closes an alarm
    after 24 h, and the one alarm was all that said it burned). It now re-announces every 6 h."""
    res = run_app(mpy, T0, """
temp.uv = 493838                         # 70 C: at the threshold, and it stays there
for t in range(10, 13 * 3600, 600):      # 13 h of readings every 10 minutes
    reading_at(START + t)
print(json.dumps([b["w"] - START for b in rep.of("alarm")]))
""")
    assert res == [0, 21600, 43200]


def test_fire_alarm_on_threshold_without_rise(mpy: Mpy) -> None:
    res = run_app(mpy, T0, """
temp.uv = 493838                         # 70 C from the first reading on
reading_at(START + 10)
print(json.dumps([b["a"] for b in rep.of("alarm")]))
""")
    assert res == [["fire"]]


def test_tip_over_alarm_once_and_tilt_not_armed_while_tilted(mpy: Mpy) -> None:
    res = run_app(mpy, T0, """
tilt.v = 1                               # lying on its side
reading_at(START + 10)
reading_at(START + 310)
plan_tilted = app.sleep_plan()
tilt.v = 0
reading_at(START + 610)
reading_at(START + 910)                  # closes the first window
plan_upright = app.sleep_plan()
win = rep.of("win")[0]["m"]
print(json.dumps([[b["a"] for b in rep.of("alarm")], plan_tilted, plan_upright, win["tilt"]]))
""")
    alarms, plan_tilted, plan_upright, tilt_field = res
    assert alarms == [["tip"]]
    # the tip alarm is never acknowledged here: the bin wakes at the next alarm retry slot
    # (a multiple of 120 s: START + 360, START + 960), before the next reading
    assert plan_tilted == [50000, ["lid"]]
    assert plan_upright == [50000, ["lid", "tilt"]]
    assert tilt_field == 1


def test_lid_openings_released_as_noisy_daily_count(mpy: Mpy) -> None:
    res = run_app(mpy, T0, """
t = START + 60
for i in range(40):                      # 40 openings in the day, each flapping 3 times in 2 s
    for k in range(3):
        app.lid_opened(t + k)
    t += 1800
reading_at(START + 100)
counted = app.state["lid"]
reading_at(START + 86400 + 100)          # first reading of the next day releases yesterday's count
days = rep.of("day")
print(json.dumps([counted, days, app.state["lid"]]))
""")
    counted, days, after = res
    assert counted == 40 and after == 0
    assert len(days) == 1
    day = days[0]
    assert (day["w"], day["l"], day["e"]) == (T0, 86400, {"lid": 500})
    # DLap noise at eps 0.5 has scale 2: |noise| > 40 has probability below 1e-8
    assert "lid" in day["m"] and abs(day["m"]["lid"] - 40) <= 40
    assert set(day["m"]) == {"lid"}


def test_few_lid_openings_are_suppressed_below_k(mpy: Mpy) -> None:
    res = run_app(mpy, T0, """
app.lid_opened(START + 100)              # one opening: the noisy value is almost surely < k = 5
reading_at(START + 200)
reading_at(START + 86400 + 200)
print(json.dumps(rep.of("day")))
""", seed=3)
    assert len(res) == 1 and res[0]["e"] == {"lid": 500}
    # the epsilon was spent (it is accounted) but the value is absent unless the noise pushed it to k
    assert "lid" not in res[0]["m"] or res[0]["m"]["lid"] >= 5


def test_run_deep_wakes_reads_and_sleeps_with_the_time_left(mpy: Mpy) -> None:
    res = run_app(mpy, T0, """
slept = []
def sleeper(ms, pins):
    slept.append([ms, pins])
drive(app.run_deep(False, lambda: 0, sleeper))    # first boot: reading due at once
clock.set_time(START + 100)
lid.v = 1                                          # lid opened: woke by the lid pin
drive(app.run_deep(True, lambda: 0, sleeper))
lid.v = 0
clock.set_time(START + 110)                        # lid shut again before the boot finished
drive(app.run_deep(True, lambda: 0, sleeper))
clock.set_time(START + 120)
tilt.v = 1                                         # the tilt pin woke it: an alarm, not a lid
drive(app.run_deep(True, lambda: 0, sleeper))
print(json.dumps([slept, app.state["lid"], app.state["next"], [b["a"] for b in rep.of("alarm")]]))
""")
    slept, lid_count, next_due, alarms = res
    assert slept[0] == [300000, ["lid", "tilt"]]
    assert slept[1] == [200000, ["tilt"]]             # lid still open: not armed; reading not yet due
    assert slept[2] == [190000, ["lid", "tilt"]]
    # tipped over: tilt not armed; the alarm waits (no gateway): the next alarm retry slot
    # (START + 240, on the ALARM_RETRY_S grid) comes before the reading (START + 300)
    assert slept[3] == [120000, ["lid"]]
    assert lid_count == 2 and next_due == T0 + 300   # 100 s and 110 s: 10 s apart, beyond the 5 s refractory
    assert alarms == [["tip"]]


def test_state_survives_deep_sleep_resets(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """Each reading runs in a fresh interpreter (a deep-sleep wake is a reset); /flash persists."""
    flash = tmp_path / "flash"
    outputs = []
    for k in (1, 2, 3, 4, 72):
        body = f"""
clock.set_time({T0} + 300 * {k})
if {k} == 2:
    app.lid_opened(clock.time() - 30)
drive(app.cycle())
print(json.dumps([rep.sent, app.state["tn"], app.state["lid"]]))
"""
        res = flash_run(script(T0, body, state="/flash/state/bin.json"), flash)
        outputs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    sent = [o[0] for o in outputs]
    assert sent[0] == [] and sent[1] == []
    # the third wake (00:15) closes the window holding the readings of wakes 1 and 2
    assert sent[2] == [{"t": "win", "k": "bin", "w": T0, "l": 900, "m": {"temp": 20, "tilt": 0, "bat": 60}}]
    # 06:00: the fill period's last reading (00:20, four wakes back) outlived the resets
    assert sent[4] == [{"t": "win", "k": "bin", "w": T0 + 900, "l": 900, "m": {"temp": 20, "tilt": 0, "bat": 60}},
                       {"t": "win", "k": "bin", "w": T0, "l": 21600, "m": {"fill": 50}}]
    assert [o[1] for o in outputs] == [1, 2, 1, 2, 1]
    assert [o[2] for o in outputs] == [0, 1, 1, 1, 1]
    assert (flash / "state" / "bin.json").is_file()


def test_awake_bin_counts_lid_by_irq_and_reads_on_schedule(mpy: Mpy) -> None:
    """A bin board that stays powered (sleep mode none): the asyncio loop on the real event loop."""
    res = run_app(mpy, T0, """
import asyncio
app.mode = "none"
async def world():
    for i in range(40):
        clock.ms += 1000                         # 1 virtual s per step
        if i in (3, 4, 20):                      # openings at 3 s and 4 s (one, refractory 5 s) and 20 s
            lid.v = 1
            lid.pulse()
        else:
            lid.v = 0
        await asyncio.sleep_ms(5)
    task.cancel()
    await asyncio.sleep_ms(5)
    print(json.dumps([app.state["lid"], app.state["tn"], lid.trigger, hw.fed > 0]))
task = asyncio.create_task(app.run_awake())
asyncio.create_task(world())
""")
    lid_count, readings, trigger, fed = res
    assert lid_count == 2
    assert readings == 1               # the first reading at start; the next is due after 300 s
    assert trigger == 1 and fed        # IRQ on the rising edge (lid active high)


def test_reads_every_minute_while_a_fire_may_be_starting(mpy: Mpy) -> None:
    res = run_app(mpy, T0, """
nexts = []
for uv, t in [(1835632, 10), (1835632, 310), (1143344, 610), (1143344, 670), (871419, 730), (1835632, 790),
              (1835632, 1090)]:
    temp.uv = uv            # 20, 20, 40 (+4 C/min: watch, no alarm), 40, 50 (+10 C/min: fire), 20, 20 C
    reading_at(START + t)
    nexts.append(app.state["next"] - clock.time())
print(json.dumps([nexts, [b["a"] for b in rep.of("alarm")]]))
""")
    nexts, alarms = res
    assert nexts == [300, 300, 60, 300, 60, 300, 300]   # back to 5 min once it cooled and the alarm cleared
    assert alarms == [["fire"]]


def test_a_clock_set_back_across_midnight_releases_the_day_once(mpy: Mpy) -> None:
    # readings every 5 min; just after midnight a time sync sets the clock back 20 s (into the day
    # already released): the day's lid count must not be released a second time.
    res = run_app(mpy, T0, """
for i in range(6):
    app.lid_opened(START + 600 + 60 * i)
for t in (START + 85800, START + 86100, START + 86400 + 10, START + 86400 - 10, START + 86400 + 290):
    reading_at(t)
print(json.dumps([[b["w"] for b in rep.of("day")], [b["w"] for b in rep.of("win")]]))
""")
    days, wins = res
    assert days == [T0]
    assert len(wins) == len(set(wins))          # no window reported twice


def test_linger_for_the_gateway_is_bounded_by_time_not_by_loop_count(mpy: Mpy) -> None:
    # A gateway out of reach: the outbox never empties. The bin must give up after linger_s
    # (30 s) of time awake, then sleep until the next reading; it stayed up ~300 s per wake.
    res = run_app(mpy, T0, """
class CountingWake:
    def __init__(self):
        self.waits = []
    def set(self):
        pass
    async def wait_ms(self, ms):
        self.waits.append(ms)
        clock.ms += ms
app.wake = CountingWake()
slept = []
drive(app.run_deep(False, lambda: 1, lambda ms, pins: slept.append(ms)))
print(json.dumps([app.wake.waits, slept]))
""")
    waits, slept = res
    assert 0 < sum(waits) <= 30000, waits
    assert slept == [300000 - sum(waits) // 1000 * 1000]


def test_a_clock_set_far_back_does_not_put_the_bin_to_sleep_for_days(mpy: Mpy) -> None:
    res = run_app(mpy, T0, """
reading_at(START)                              # next reading planned 300 s later
clock.set_time(START - 3 * 86400)              # a time sync sets the clock 3 days back
ms, pins = app.sleep_plan()
print(json.dumps([ms, app.due()]))
""")
    ms, due = res
    assert ms <= 300000 and due is False


def test_a_full_flash_does_not_stop_the_bin(mpy: Mpy) -> None:
    # state saves and the day's lid release fail (ENOSPC): logged and counted, the bin reads,
    # reports what it can and goes to sleep; once the flash has room again all works
    res = run_app(mpy, T0, """
import civic.store.atomic as A
orig = A.write
def full(path, data):
    raise OSError(28)
app.lid_opened(START + 60)
reading_at(START + 100)
A.write = full
slept = []
clock.set_time(START + 86400 + 100)            # next day: window close and the daily lid release
drive(app.run_deep(False, lambda: 0, lambda ms, pins: slept.append(ms)))
errors = app.errors
A.write = orig
reading_at(START + 86400 + 500)
print(json.dumps([errors, slept, app.save(), [b["t"] for b in rep.of("day")]]))
""")
    errors, slept, saved, days = res
    assert errors >= 2                 # the ledger's grant and the state save
    assert slept and saved is True
    assert days == []                  # the release could not be granted: nothing noisy left


RESET_BODY = """
from civic.privacy.ledger import Ledger
from civic.privacy.release import Releaser
app.releaser = Releaser(pol.fields, Ledger("/flash/ledger.json", pol.day_budgets()))
radio = [RADIO]
app.releaser.rng_ready = lambda: radio[0]
STEP
print(json.dumps([[[b["w"], b["e"]] for b in rep.of("day")], app.state["lid"], app.held]))
"""


def _boot(flash_run: Callable[..., Any], flash: Path, step: str, radio: bool = True) -> Any:
    body = RESET_BODY.replace("RADIO", str(radio)).replace("STEP", step)
    res = flash_run(script(T0, body, state="/flash/state/bin.json"), flash)
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_reset_between_the_daily_release_and_the_state_save_releases_the_day_once(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    # QA: the day's lid release is granted and queued inside record(), but the cleared count and
    # the new day reach flash only in save(): a reset in between used to release the same day
    # again with fresh noise at every such reset. The ledger now refuses a period released already.
    flash = tmp_path / "flash"
    _boot(flash_run, flash, f"""
for i in range(30):
    app.lid_opened(START + 60 + 1800 * i)
reading_at(START + 100)""")
    next_day = """
clock.set_time(START + 86400 + 100 + BOOT)
fill, deci, tilted, bat = drive(app.measure())
app.record(clock.time(), fill, deci, tilted, bat)    # releases the day ... reset before save()"""
    first = _boot(flash_run, flash, next_day.replace("BOOT", "0"))
    again = [_boot(flash_run, flash, next_day.replace("BOOT", str(b))) for b in (1, 2, 3)]
    assert first[0] == [[T0, {"lid": 500}]]
    assert all(r[0] == [] for r in again)                    # no second release of that day


def test_a_lid_count_waits_for_the_radio_across_deep_sleep(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    # Radio off at the daily release (RNG not truly random): the count is held in the state file,
    # not lost and not released; at a later wake with the radio on it leaves for its own day.
    flash = tmp_path / "flash"
    _boot(flash_run, flash, f"""
for i in range(30):
    app.lid_opened(START + 60 + 1800 * i)
reading_at(START + 100)""")
    held = _boot(flash_run, flash, "reading_at(START + 86400 + 100)", radio=False)
    released = _boot(flash_run, flash, "reading_at(START + 86400 + 400)")
    assert held[0] == [] and held[1] == 0 and held[2] == {"lid": [30, T0, 86400, "day"]}
    assert released[0] == [[T0, {"lid": 500}]] and released[2] == {}


def test_a_lid_wake_starts_the_radio_only_at_the_instant_of_the_timer_wake_it_holds(mpy: Mpy) -> None:
    # QA: every lid opening woke the bin, which started its links and sent pending frames at once:
    # the gateway's received_at then told when the lid was opened. Privacy audit (MEDIUM-1): an
    # unacknowledged alarm still started the radio at every lid wake. A lid wake now never starts
    # the links, not with a reading due nor with an alarm waiting; only timer wakes (readings,
    # alarm retry slots every ALARM_RETRY_S = 120 s on the RTC) and the wake that raises a tip
    # alarm do, and a lid wake that holds the instant of a timer wake (the lid opened as it came) does
    # that timer wake's work there, as it would have (test_bin_lid_hold.py); until 2026-12-07 it slept,
    # and the reading came a second late. The radio starts are recorded on the clock when the links start.
    res = run_app(mpy, T0, """
started = []
slept = []
def sleeper(ms, pins):
    slept.append(ms)
def wake(by_pin, t, ack=None):
    clock.set_time(t)
    n = len(started)
    def pending():
        if ack is not None:
            gateway_ack(ack)                    # the ACK comes in while the bin is awake
        return len(rep.outbox)
    drive(app.run_deep(by_pin, pending, sleeper, linger_s=0,
                       start_links=lambda: started.append(clock.time_ms() - START * 1000)))
    return len(started) > n
out = []
rep.report("win", START - 900, 900, {"temp": 20})   # a report from before, not collected yet
out.append(wake(False, START))                  # timer wake: reading due
lid.v = 1
out.append(wake(True, START + 100))             # lid: nothing due, frames pending -> radio stays off
lid.v = 0
out.append(wake(True, START + 290))             # lid 10 s before the reading: no reading, radio off
n_read = app.state["tn"]
out.append(wake(True, START + 300))             # lid at the reading's instant: the timer wake's work
n_held = app.state["tn"]
out.append(wake(True, START + 310))             # lid, nothing due: radio off
tilt.v = 1
out.append(wake(True, START + 320))             # tipped over: the alarm goes at once
tilt.v = 0
lid.v = 1
out.append(wake(True, START + 330))             # the tip alarm is not acknowledged: radio still off
lid.v = 0
out.append(wake(False, START + 360, ack=rep.seq.last))  # alarm retry slot: the gateway acknowledges
lid.v = 1
out.append(wake(True, START + 370))             # plain lid opening again
print(json.dumps([out, app.state["lid"], slept, len(rep.outbox), n_read, n_held, app.state["tn"], started]))
""")
    started, lid_count, slept, left, n_before, n_held, n_after, at_ms = res
    assert started == [True, False, False, True, False, True, False, True, False]
    # the timer wake at +0, the lid wake at the reading's instant +300 (at it, to the ms), the tilt wake at
    # +320, the retry slot at +360: never at a lid wake's own time
    assert at_ms == [0, 300000, 320000, 360000]
    assert lid_count == 6                       # every pin wake but the tilt one counts the lid
    assert slept[1] == 200000 and slept[2] == 10000   # the lid wakes sleep until the reading
    assert n_held == n_before + 1 == n_after    # the lid wake at +300 took the reading, the one at +310 none
    assert slept[3] == 300000 and slept[4] == 290000  # ... and both sleep to the next reading (+600)
    assert slept[6] == 30000                    # alarm waiting: the lid wake sleeps to the slot at +360
    assert slept[8] == 230000                   # alarm acknowledged: back to the reading at +600
    assert left == 0


DEEP_SIM = """
lids = %r          # seconds after START of lid openings
GW = %r            # the gateway is in range (acknowledges) from START + GW on; None: never
started = []
lid_radio = []
acked = []
plan = [START]
class Wake:                              # a wait on the simulated clock (a lid wake holding a timer wake's)
    def set(self):
        pass
    async def wait_ms(self, ms):
        clock.ms += ms
def sleeper(ms, pins):
    plan[0] = clock.time() + ms // 1000      # the timer wake the bin armed
def pending():
    if GW is not None and clock.time() >= START + GW and len(rep.outbox):
        gateway_ack(rep.seq.last)
        if not acked:
            acked.append(clock.time() - START)
    return len(rep.outbox)
def wake(by_pin, t):
    # one deep-sleep wake; the app is built afresh from its state file (the chip resets)
    global app
    app = make_app()
    app.wake = Wake()
    clock.ms = 0                         # ticks restart at the reset
    clock.set_time(t)
    n = len(started)
    drive(app.run_deep(by_pin, pending, sleeper, linger_s=0,
                       start_links=lambda: started.append(clock.time() - START)))
    return len(started) > n
wake(False, START)                       # first reading (the next at START + 300)
tilt.v = 1
wake(True, START + 200)                  # tipped over: tip alarm, no gateway in range
tilt.v = 0                               # someone puts it upright
todo = sorted(lids)
while plan[0] < START + 6 * 3600:
    if todo and START + todo[0] < plan[0]:
        lid.v = 1                        # a lid opening before the armed timer
        lid_radio.append(wake(True, START + todo.pop(0)))
        lid.v = 0
    else:
        wake(False, plan[0])
print(json.dumps([started, lid_radio, acked, app.state["lid"], [b["a"] for b in rep.of("alarm")]]))
"""

# lid openings at arbitrary seconds, and just before (479, 959, ...) and after (241) retry slots
LIDS = [241, 437, 479, 959, 1111, 1919, 2879, 3839, 3907, 3913, 7199, 7679, 7777, 10559, 14444, 20011]
# the tip alarm (raised at +200) is retried with no gateway: the step doubles after each slot
# (120, 240, 480, then capped at 960 s); each slot is the next multiple of the step
RETRIES = [240, 480] + list(range(960, 6 * 3600, 960))


def test_an_unacknowledged_alarm_never_starts_the_radio_at_a_lid_wake(mpy: Mpy) -> None:
    """Privacy audit MEDIUM-1: a deep-sleeping bin with an unacknowledged tip alarm started BLE at
    every lid wake, advertising from the second of the opening. Lid openings at arbitrary times
    while the alarm waits (no gateway): none starts the radio at its own time, the radio starts at
    exactly the same times as without the openings, and the alarm is retried on the RTC grid of a step
    that doubles after each unacknowledged slot (ALARM_RETRY_S = 120 s up to ALARM_RETRY_MAX_S = 960 s;
    before, every 120 s for ever). A lid wake a second before a slot or a reading (within HOLD_MS)
    waits and starts the radio at that instant, as the timer wake it holds would (until 2026-12-07 it
    slept: the slot was skipped, the reading a second late). The back-off state lives in the state
    file: the app is rebuilt from it at every wake."""
    with_lids = run_app(mpy, T0, DEEP_SIM % (LIDS, None))
    without = run_app(mpy, T0, DEEP_SIM % ([], None))
    started, lid_radio, acked, lid_count, alarms = with_lids
    assert [t for t, r in zip(LIDS, lid_radio) if r] == [479, 959, 1919, 2879, 3839, 7199, 7679, 10559]
    assert lid_count == len(LIDS)
    assert alarms == [["tip"]]
    assert started == without[0]                 # the radio's times do not depend on the lid
    assert 200 in started                        # the tip wake itself sends the alarm at once
    readings = list(range(0, 6 * 3600, 300))
    assert started == sorted(set(readings + [200] + RETRIES))   # readings, the tip wake, the retries
    steps = [b - a for a, b in zip(RETRIES, RETRIES[1:])]
    assert steps == [240, 480] + [960] * 21
    # every slot is a multiple of the step in force on the RTC (UTC; T0 is a multiple of 3600)
    assert [t % s for t, s in zip(RETRIES, [120, 240, 480] + [960] * 21)] == [0] * 24
    assert not set(started) & set(LIDS)


def test_a_waiting_alarm_reaches_a_returning_gateway_at_the_next_timer_wake(mpy: Mpy) -> None:
    # the gateway comes back at an arbitrary second; the alarm goes at the next timer wake, never
    # at a lid wake's own time, however many openings: here the reading at +5100 (the retry step is
    # 960 s by then, the next slot +5760; readings every 300 s offer the alarm too). The lid wakes a
    # second before a slot (before the ACK) or a reading start the radio at its instant, as its timer
    # wake would
    gw = 5000 + 77
    started, lid_radio, acked, lid_count, alarms = run_app(mpy, T0, DEEP_SIM % (LIDS, gw))
    assert [t for t, r in zip(LIDS, lid_radio) if r] == [479, 959, 1919, 2879, 3839, 7199]
    assert not set(started) & set(LIDS)
    assert acked == [5100] and acked[0] in started
    # acknowledged: no more retry slots, only the readings (every 300 s)
    assert all(t % 300 == 0 for t in started if t > acked[0])


WAKE = """
started = []
def wake(by_pin, t, ack=None):
    # one deep-sleep wake; the app is built afresh from its state file (the chip resets)
    global app
    app = make_app()
    clock.set_time(t)
    n = len(started)
    def pending():
        if ack is not None:
            gateway_ack(ack)                    # the ACK comes in while the bin is awake
        return len(rep.outbox)
    drive(app.run_deep(by_pin, pending, lambda ms, pins: None, linger_s=0,
                       start_links=lambda: started.append(t)))
    return len(started) > n
"""


def test_an_acknowledged_alarm_no_longer_starts_the_radio_while_other_reports_wait(mpy: Mpy) -> None:
    # QA: the "unsent alarm" flag was cleared only once the whole outbox was empty. With the alarm
    # delivered but a later report still waiting (the gateway went away for days), every lid
    # opening started the radio and lingered: the opening times showed again, the battery drained.
    # The bin now keeps the alarm's seq and clears the flag once the outbox no longer holds it.
    res = run_app(mpy, T0, WAKE + """
out = []
for t in (0, 300, 600):
    out.append(wake(False, START + t))          # timer wakes: readings, nothing to send yet
tilt.v = 1
out.append(wake(True, START + 900))             # tipped over as the window closes: alarm, then win
alarm = rep.outbox.pending()[0]
saved = json.loads(atomic.read(STATE))["alarm"]
tilt.v = 0
out.append(wake(False, START + 1200, ack=alarm))   # the gateway takes the alarm only, then goes away
lid.v = 1
out.append(wake(True, START + 1250))            # plain lid opening, a report still waiting
lid.v = 0
out.append(wake(True, START + 1270))            # and again (lid shut before the boot finished)
print(json.dumps([out, [b["t"] for b in rep.sent], alarm, saved, rep.outbox.pending(), app.state["alarm"],
                  app.state["lid"]]))
""")
    started, types, alarm, saved, waiting, flag, lid_count = res
    assert types == ["alarm", "win"]
    assert saved == alarm and not isinstance(saved, bool)   # the state holds the alarm's seq
    assert waiting == [alarm + 1]                # the window report still waits for the gateway
    assert flag is False
    assert started == [True, True, True, True, True, False, False]
    assert lid_count == 2


def test_an_alarm_flag_saved_by_older_firmware_waits_for_an_empty_outbox(mpy: Mpy) -> None:
    # Older firmware saved "alarm": true (no seq): it still loads, and the bin retries it at the
    # alarm retry slots (timer wakes, never at a lid wake) until the outbox is empty.
    res = run_app(mpy, T0, WAKE + """
atomic.makedirs("/state")
atomic.write(STATE, json.dumps({"next": START + 3000, "alarm": True}).encode())
rep.report("win", START - 900, 900, {"temp": 20})
loaded = make_app().state["alarm"]
out = []
lid.v = 1
out.append(wake(True, START + 10))              # alarm unsent, seq unknown: still no radio at a lid
lid.v = 0
out.append(wake(False, START + 120))            # the retry slot: radio on, no gateway
out.append(wake(False, START + 240, ack=rep.seq.last))  # the outbox empties: flag cleared
kept = json.loads(atomic.read(STATE))["alarm"]
lid.v = 1
out.append(wake(True, START + 250))             # plain lid opening: radio off
print(json.dumps([loaded, out, kept, app.sleep_plan()[0]]))
""")
    loaded, started, kept, plan_ms = res
    assert loaded is True
    assert started == [False, True, True, False]
    assert kept is False
    # no alarm: straight to the reading, which the first timer wake (+120) brought forward to one
    # interval (START + 420: next further than interval_s, as after a clock set back) and kept; the
    # lid wake at +10 left it (until 2026-12-07 it re-planned it from its own time, START + 310:
    # the readings then followed the lid opening)
    assert plan_ms == 170000


DEPOSIT_DAY = """
deposits = %r      # seconds after START -> distance (mm) to the waste after it
mm = 575                                 # 50 %% full
t = START + 10
while t < START + 86400 + 1000:          # readings every 5 min for a day, into the next one
    for d in sorted(deposits):
        if t - 300 < START + d <= t:
            app.lid_opened(START + d)    # a deposit: the lid opens and the fill steps up
            mm = deposits[d]
    echo_fn.default = us(mm)
    reading_at(t)
    t += 300
print(json.dumps(rep.sent))
"""


def _deposit_day(mpy: Mpy, deposits: dict[int, int]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = run_app(mpy, T0, DEPOSIT_DAY % (deposits,))
    return sent


def test_nothing_released_tells_a_deposit_time_finer_than_the_fill_period(mpy: Mpy) -> None:
    """Privacy audit (HIGH): fill steps up with each deposit, so a fill released every 15-minute window
    gave each deposit's window (event times of a people-related signal). Three deposits over a day, then
    the same deposits each moved elsewhere within its 6-hour fill period: every report body the bin
    releases (windows, fill, the daily lid count) must be the same, so none of them dates a deposit
    finer than the period. Moving one deposit into another period must show (the test can fail)."""
    h, mi = 3600, 60
    at = {9 * h + 7 * mi: 490, 13 * h + 41 * mi: 405, 18 * h + 22 * mi: 320}
    moved = {6 * h + 1 * mi: 490, 17 * h + 55 * mi: 405, 23 * h + 50 * mi: 320}   # same 6-h periods
    other = {9 * h + 7 * mi: 490, 11 * h + 50 * mi: 405, 18 * h + 22 * mi: 320}   # 13:41 -> 11:50
    sent = _deposit_day(mpy, at)
    assert sent == _deposit_day(mpy, moved)
    fills = [(b["w"] - T0, b["l"], b["m"]["fill"]) for b in sent if "fill" in b.get("m", {})]
    # the level at the end of each 6-hour period, only in reports over that period
    assert fills == [(0, 21600, 50), (21600, 21600, 60), (43200, 21600, 70), (64800, 21600, 80)]
    assert all(set(b["m"]) == {"fill"} for b in sent if b["l"] == 21600)
    assert [b["t"] for b in sent].count("day") == 1 and all("fill" not in b["m"] for b in sent if b["l"] == 900)
    assert len([b for b in sent if b["l"] == 900]) == 97    # to 00:15 of the next day
    fills_other = [(b["w"] - T0, b["m"]["fill"]) for b in _deposit_day(mpy, other) if "fill" in b.get("m", {})]
    assert fills_other == [(0, 50), (21600, 70), (43200, 70), (64800, 80)]


def test_a_clock_set_back_across_a_fill_mark_releases_each_period_once_and_not_early(mpy: Mpy) -> None:
    """A clock set back by more than STEP_BACK_S across a 6-hour mark (05:05 -> a gateway 15 min behind
    sets 05:50 after 06:05) leaves the fill period twice: period 0 must not leave again, and period
    06:00-12:00 must not leave at the step (05:50), only once its end has passed. The end of the last
    period released is kept in the saved state (a fresh interpreter after the step sees it)."""
    res = run_app(mpy, T0, """
at = []
def step(t):
    n = len(rep.sent)
    reading_at(t)
    at.extend([t - START, b["w"] - START, b["m"]["fill"]] for b in rep.sent[n:] if "fill" in b["m"])
t = START + 10
while t < START + 6 * 3600 + 400:
    step(t); t += 300
app.save()
app = make_app()                              # a deep-sleep reset: the state comes from flash
echo_fn.default = us(405)                     # 70 %
t = START + 6 * 3600 - 600                    # set back 15 min, across 06:00
while t < START + 12 * 3600 + 400:
    step(t); t += 300
print(json.dumps([at, app.state["fe"] - START]))
""")
    at, fe = res
    assert [(w, f) for _, w, f in at] == [(0, 50), (21600, 70)]
    assert all(t >= w + 21600 for t, w, _ in at)      # never before the period's end
    assert fe == 43200


DEEP_MS = """
lids_ms = %r       # ms after START * 1000 of lid openings
BOOT_MS = 173      # from a wake to the app's first look at the clock
WORK_MS = 1234     # a timer wake's radio and reading before it sleeps again
armed = []
radio = []
plan = [START * 1000]
class BootClock(FakeClock):
    def ticks_ms(self):
        return self.ms - self.reset      # ticks restart at each wake (a reset), as on a board
clock = BootClock(START)
class Wake:                              # a wait on the simulated clock (a lid wake holding a timer wake's)
    def set(self):
        pass
    async def wait_ms(self, ms):
        clock.ms += ms
def at(x):
    clock.ms = x - clock.t0 * 1000       # the fake clock now shows unix ms x
def sleeper(ms, pins):
    plan[0] = clock.time_ms() + ms        # the instant the armed timer wakes the chip
    armed.append(plan[0] - START * 1000)
def start_links():
    radio.append(clock.time_ms() - START * 1000)
    at(clock.time_ms() + WORK_MS)
def wake(by_pin, x):
    # one deep-sleep wake at unix ms x; the app is built afresh from its state file (the chip resets)
    global app
    clock.reset = x - clock.t0 * 1000
    at(x + BOOT_MS)
    app = make_app()
    app.wake = Wake()
    drive(app.run_deep(by_pin, lambda: len(rep.outbox), sleeper, linger_s=0, start_links=start_links))
wake(False, START * 1000)                # first reading
tilt.v = 1
wake(True, START * 1000 + 200457)        # tipped over: an alarm no gateway acknowledges
tilt.v = 0
todo = sorted(lids_ms)
while plan[0] < (START + 4 * 3600) * 1000:
    if todo and START * 1000 + todo[0] < plan[0]:
        assert START * 1000 + todo[0] > clock.time_ms()   # a lid wake, not during a timer wake
        lid.v = 1
        wake(True, START * 1000 + todo.pop(0))
        lid.v = 0
    else:
        wake(False, plan[0])
print(json.dumps([radio, app.state["lid"], armed]))
"""

# two of them (479500, 3839700) open within a boot or HOLD_MS (2 s) before a retry slot
LIDS_MS = [437613, 479500, 1111002, 3839700, 3907999, 3916450, 7777321, 9003999, 12444777]


def test_timer_wakes_land_on_whole_seconds_whatever_the_lid(mpy: Mpy) -> None:
    """Review MEDIUM-2: the bin armed its timer for whole seconds from the RTC's whole seconds, so
    a timer wake landed at the fraction of the second the bin went to sleep in, and after a lid wake
    that fraction was the lid's (the gateway, knowing to the ms when the bin slept, could tell a lid
    was opened). The timer is now armed from the RTC in ms: every timer wake is at .000 of its
    second, and the radio starts (a timer wake's, or a lid wake's holding one, at its instant: the
    second plus its boot) are the same to the ms with and without lid openings."""
    with_lids = run_app(mpy, T0, DEEP_MS % (LIDS_MS,))
    without = run_app(mpy, T0, DEEP_MS % ([],))
    radio, lid_count, armed = with_lids
    assert lid_count == len(LIDS_MS)
    assert radio == without[0]                        # identical to the millisecond
    # each timer wake starts the radio (20 C, not a watch) BOOT_MS after its second; the tip wake at
    # its own time. 4 h: the readings (+301, then every 300 s: the first reading starts WORK_MS late,
    # the next ones follow the times planned, not when each was taken) and the alarm's retry slots,
    # on multiples of its step (doubling from 120 s to 960 s), the only wakes on the 120-s grid
    timer = [r - 173 for r in radio[1:] if r != 200457 + 173]   # after the first reading (+0)
    assert [t for t in timer if t % 120000 == 0] == [240000, 480000] + list(range(960000, 4 * 3600000, 960000))
    assert len(timer) > 50 and all(t % 1000 == 0 for t in timer + armed)   # every one on a whole second
    # the two lid wakes holding a slot armed what its timer wake would have; the others slept at once
    assert set(armed) == set(without[2]) and len(armed) == len(without[2]) + len(LIDS_MS) - 2


def test_the_device_clock_reads_milliseconds_on_the_seconds_it_shows(mpy: Mpy) -> None:
    # Clock.time_ms (time.time_ns) is what sleep_plan re-arms from: the same epoch as Clock.time
    out = mpy("""
import json
from civic.hal.clock import Clock
c = Clock()
a = c.time(); m = c.time_ms(); b = c.time()
print(json.dumps([a, m, b]))
""").stdout.strip().splitlines()
    a, m, b = json.loads(out[-1])
    assert a > 1_600_000_000 and a <= m // 1000 <= b and isinstance(m, int)
