"""A lid wake next to a planned timer wake does that timer wake's work at its instant (real MicroPython, simulator).

A lid opened within about a boot before a planned timer wake (a reading or an alarm retry slot) keeps the chip
up when the timer's second begins: the timer cannot wake it. Until 2026-12-07 that lid wake only counted the
opening and slept: the reading came a second late, an alarm retry slot was skipped and the back-off step still
doubled at the next radio session, so the radio starts, the gateway's ACK times (``received_at``) and the whole
later retry grid told that a lid had been opened in the second before. Now a lid wake that finds the next timer
wake due within ``HOLD_MS`` (2 s), or its second begun, waits until the instant that timer wake's code would run
(its whole second plus the boot, which the lid wake measures as its own ticks since the reset) and runs it, in
the same boot: the observable timings are those of the bin without the opening, to the millisecond.

The runs use ``test_bin_fire_radio.SIM``: every wake (timer, lid, tilt) boots in ``BOOT_MS``, a lid opening is
a wake at that instant to the ms, the gateway acknowledges 2 s after the radio started.
"""

from __future__ import annotations

from typing import Any

from test_apps_bin import T0, Mpy, run_app
from test_bin_fire_radio import sim

H = 3600
HOLD_MS = 2000  # civic.apps.bin.HOLD_MS
NAMES = ("sessions", "acked", "alarms", "wins", "left", "dropped", "armed", "acked_ms", "reads", "backoff", "wakes")
# what a scanner or the gateway can see, and the bin's back-off: identical with and without the openings
OBSERVED = ("sessions", "acked", "alarms", "wins", "left", "dropped", "acked_ms", "reads", "backoff")


def _run(mpy: Mpy, events: list[list[Any]], gw: list[list[int]], end: int, boot: int, start: int,
         pre: str = "") -> dict[str, Any]:
    res = sim(mpy, events, gw, end, pre="BOOT_MS = %d\n%s" % (boot, pre), start=start, full=True)
    return dict(zip(NAMES, res))


def _asleep_at(run: dict[str, Any], at_ms: int) -> bool:
    """Whether the bin was asleep at ``at_ms`` (ms after START) in ``run``: a lid opening there is a lid wake."""
    return all(not (a <= at_ms < b) for _, a, b in run["wakes"])


def _lid_events(lids: list[tuple[int, float]]) -> list[list[Any]]:
    return [[round(t - off, 3), "lid"] for t, off in lids]


def _awake_ms(run: dict[str, Any]) -> int:
    return sum(b - a for _, a, b in run["wakes"])


# Fire from +250 (the reading at +300 raises the alarm, then a watch: a reading every 60 s), out of reach until
# 2 h, then a gateway. START is 10 s past the minute, so the readings (+300 + 60 k) are off the retry grid
# (multiples of the step on the RTC: +350, +470, +950, +1910, +2870, ... +7670, where the gateway takes the
# alarm). Lid openings (instant, seconds before it): before retry slots and before readings, out of reach (no
# radio at a watch reading) and in reach (every reading starts the radio), and two far from any timer wake.
# The reading chain starts at the first reading, read at +boot: with a boot over 1 s, at +X01 (READS moves).
SLOTS = [(350, 0.1), (470, 0.3), (950, 0.7), (1910, 1.0), (2870, 1.5), (3830, 2.0), (4790, 2.5), (5750, 0.05)]
READS = [(2400, 0.5), (3000, 1.2), (5100, 2.2), (6000, 2.9), (7800, 0.4), (8400, 1.8), (9000, 2.6)]
FAR = [(1500, 25.0), (6330, 17.5)]


def _fire_lids(boot: int) -> list[tuple[int, float]]:
    return SLOTS + [(t + boot // 1000, off) for t, off in READS] + FAR


def test_lid_openings_just_before_slots_and_readings_change_no_timing_to_the_millisecond(mpy: Mpy) -> None:
    start = T0 + 10
    for boot in (300, 1100):
        plain = _run(mpy, [[250, "hot"]], [[2 * H, 9 * H]], 3 * H, boot, start)
        fire_lids = _fire_lids(boot)
        lid_ms = [round((t - off) * 1000) for t, off in fire_lids]
        assert all(_asleep_at(plain, x) for x in lid_ms), boot  # each opening is a lid wake
        lids = _run(mpy, [[250, "hot"]] + _lid_events(fire_lids), [[2 * H, 9 * H]], 3 * H, boot, start)
        # the scenario does what it says: slots backing off on the grid, the alarm taken at +7670; the timer
        # wake after each opening (the first reading was read at +boot: with 1.1 s the readings are at +X01)
        # starts the radio at 11 of them (8 slots, 3 readings in reach), not at 4 (readings out of reach)
        assert [b[2] for b in plain["backoff"][:5]] == [350, 470, 950, 1910, 2870], boot
        assert 7670000 + boot + 2000 <= plain["acked_ms"][0][0] < 7700000, boot  # at a poll of the session
        timers = [a for pin, a, b in plain["wakes"] if not pin]
        after = [min(t for t in timers if t > x) for x in lid_ms]
        near = [t for t, x in zip(after, lid_ms) if t - x <= 3000]
        radio = {s[0] for s in plain["sessions"]}
        assert len(near) == 15 and sum(t + boot in radio for t in near) == 11, (boot, near)
        # radio starts (and how long each lasts), ACK instants and what they acknowledged, readings, the
        # back-off after each wake, reports: the same to the ms (before: readings a second late, slots missing)
        for name in OBSERVED:
            assert lids[name] == plain[name], (boot, name, lids[name], plain[name])
        # every timer armed on a whole second, and the same instants (a lid wake that slept armed one of them)
        assert set(lids["armed"]) == set(plain["armed"]) and all(a % 1000 == 0 for a in lids["armed"])
        # a lid wake finding the timer wake within HOLD_MS of its code (opening + boot) takes it over; one
        # further away counts the opening and sleeps at once, as before (awake for its boot only)
        held = [t - x for t, x in zip(after, lid_ms) if t - x - boot <= HOLD_MS]
        far = [x for t, x in zip(after, lid_ms) if t - x - boot > HOLD_MS]
        assert len(held) > 10 and len(far) >= 2, boot
        assert len(lids["wakes"]) == len(plain["wakes"]) + len(far), boot
        assert [b - a for pin, a, b in lids["wakes"] if pin and a in far] == [boot] * len(far)
        # energy: a held lid wake replaces the timer wake (from the opening to the end of that wake's work),
        # so it costs the time from the opening to the timer wake's instant: at most HOLD_MS more than a lid
        # wake that sleeps at once (its boot)
        assert _awake_ms(lids) - _awake_ms(plain) == sum(held) + boot * len(far), boot
        assert max(held) - boot <= HOLD_MS


# A tip alarm at +200 (the tilt wake sends it), a cool bin out of reach: readings every 300 s, each lingering
# 30 s, and the retry slots +240, +480, +960, +1920, then every 960 s. A lid opened before each slot.
TIP_SLOTS = [240, 480, 960, 1920, 2880, 3840, 4800, 5760, 6720, 7680, 8640, 9600, 10560]
TIP_OFFSETS = [0.2, 0.6, 1.0, 1.4, 1.9, 0.05, 0.3, 0.8, 1.2, 1.7, 0.5, 0.9, 1.6]


def test_lid_openings_before_every_retry_slot_leave_the_back_off_as_without_them(mpy: Mpy) -> None:
    # before: each such slot was skipped (no radio at it) and the step still doubled at the next reading's
    # session, so the next slot, and every later one, moved (a different grid with the openings)
    events = [[200, "tip"], [230, "up"]]
    lids = list(zip(TIP_SLOTS, TIP_OFFSETS))
    for boot in (700, 1500):
        plain = _run(mpy, events, [], 3 * H, boot, T0)
        assert all(_asleep_at(plain, (t - off) * 1000) for t, off in lids), boot
        held = _run(mpy, events + _lid_events(lids), [], 3 * H, boot, T0)
        assert plain["alarms"] == [[["tip"], 180]]
        # the back-off: planned at the tip wake, then after each slot's session the step doubled (to the cap)
        # and the next slot on the new step's grid
        assert [b[1:] for b in plain["backoff"]] == \
            [[120, 240], [240, 480], [480, 960], [960, 1920]] + [[960, t + 960] for t in TIP_SLOTS[3:]]
        assert held["backoff"] == plain["backoff"], boot
        slot_starts = [s for s in held["sessions"] if s[0] in {t * 1000 + boot for t in TIP_SLOTS}]
        assert len(slot_starts) == len(TIP_SLOTS) and all(ms == 30000 for _, ms, _ in slot_starts), boot
        for name in OBSERVED:
            assert held[name] == plain[name], (boot, name)


# The lid wake's own work (on_pin_wake: pins, the state saved) takes WORK_MS here: a lid opened less than that
# before a timer wake reaches the instant late, and runs its work at once.
SLOW_PIN_WAKE = """
_opw = BinApp.on_pin_wake
def _slow(self):
    r = _opw(self)
    clock.ms += 80
    return r
BinApp.on_pin_wake = _slow
"""


def test_a_lid_wake_past_the_instant_runs_the_timer_work_at_once_late_only_by_its_own_work(mpy: Mpy) -> None:
    start = T0 + 10
    boot = 400
    lids = [(1910, 0.03), (2400, 0.03), (2870, 0.5)]  # slot, reading (out of reach), slot
    plain = _run(mpy, [[250, "hot"]], [], H, boot, start, pre=SLOW_PIN_WAKE)
    late = _run(mpy, [[250, "hot"]] + _lid_events(lids), [], H, boot, start, pre=SLOW_PIN_WAKE)
    # the slot at +1910 and the reading at +2400 come 50 ms late (the lid wake's 80 ms of work less the 30 ms
    # between the opening and the second), not a second late or skipped, and with them what follows in the
    # slot's session (the reading at +1920 taken in it, the back-off step at its end); the slot at +2870 to the ms
    moved = {t * 1000 + boot for t in (1910, 1920, 1940, 2400)}

    def later(x: int) -> int:
        return x + 50 if x in moved else x

    assert late["sessions"] == [[later(a), ms, t] for a, ms, t in plain["sessions"]]
    assert late["reads"] == [later(r) for r in plain["reads"]]
    assert late["backoff"] == [[later(a)] + rest for a, *rest in plain["backoff"]]
    assert [b[1:] for b in plain["backoff"][:4]] == [[120, 350], [240, 470], [480, 950], [960, 1910]]
    assert 1910000 + boot in {s[0] for s in plain["sessions"]} and 2400000 + boot in plain["reads"]
    assert set(late["armed"]) == set(plain["armed"])
    # the lid wake 0.5 s before the slot at +2870: up from the opening through the slot's 30-s session
    assert [b - a for pin, a, b in late["wakes"] if pin and a == 2869500] == [500 + boot + 30000]


TICKS_NOT_RESET = """
seq = rep.alarm(["tip"], START)             # waiting, its first retry slot at +120
atomic.makedirs("/state")
atomic.write(STATE, json.dumps({"next": START + 300, "alarm": seq, "ars": 120, "ard": START + 120}).encode())
class Wake:
    def set(self):
        pass
    async def wait_ms(self, ms):
        clock.ms += ms
app = make_app()
app.wake = Wake()
clock.ms = 119300                          # the lid wake runs at +119.3 s; ticks (the fake's ms) say 119 s
lid.v = 1
radio = []
slept = []
drive(app.run_deep(True, lambda: len(rep.outbox), lambda ms, pins: slept.append(ms), linger_s=0,
                   start_links=lambda: radio.append(clock.time_ms() - START * 1000)))
print(json.dumps([radio, app.state["ars"], app.state["ard"] - START, slept]))
"""


def test_a_boot_taken_from_ticks_that_did_not_restart_is_capped_within_the_slot(mpy: Mpy) -> None:
    # a port whose ticks count from before the reset would make the lid wake wait that long: the boot is
    # capped at BOOT_MAX_MS (2.5 s), inside SLOT_BOOT_S, so the held slot still sends as the slot's and steps
    radio, ars, ard, slept = run_app(mpy, T0, TICKS_NOT_RESET)
    assert radio == [120000 + 2500] and [ars, ard] == [240, 240]
    assert slept == [240000 - 122500]
