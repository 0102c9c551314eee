"""A lid wake after a time sync that stepped the clock does not move the readings (real MicroPython, simulator).

A gateway's ACK carries its time; the bin sets its clock from it (``civic.uplink.session``), back by up to the
allowance the session has accrued, or forward. Set back, the next reading the bin had planned lies more than
``interval_s`` ahead. Until 2026-12-07 the bin re-planned it (``next`` = now + ``interval_s``) at whichever
wake came first, and a lid wake saved that (``on_pin_wake``): the reading after it, and every reading and radio
start of the chain from then on, followed the instant the lid was opened. Now the re-plan is made and saved at
the end of the radio session in which the clock was stepped (``BinApp.replan``), at the time that session
ends, and a lid wake never re-plans. Set forward past the planned reading, the bin sleeps to the next whole
second; a lid wake whose own boot ran past that second slept to the one after, a second late (and a reading
later than ``LATE_S`` plans from its own time). It now takes that second's work at its instant, as it does
for any timer wake it keeps from happening (``BinApp.hold_until_ms``).

The runs use ``test_bin_fire_radio.SIM`` through ``test_bin_lid_hold._run``: a gateway always in reach
(every reading starts the radio; ACK 2 s after it), every wake booting in ``BOOT_MS``. ``STEP`` below makes
the gateway's first ACK at or after ``STEP_AT`` carry the time ``now - BACK``, handled by a real ``Session``
whose back-step allowance covers it; the run stops ``STOP`` s after that on the stepped clock (the SIM runs
to ``END`` on the clock, which a step back would put days away). Lid openings after the step are put into the
SIM's event list once the step happened (given in the stepped clock's seconds after ``START``).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from test_apps_bin import T0, Mpy
from test_bin_lid_hold import OBSERVED, _asleep_at, _lid_events, _run

H = 3600
DAY = 86400
INTERVAL = 300  # the bin's interval_s in these tests
BOOT = 300      # every wake's boot (ms)
STEP_AT = 1700  # the time sync comes with the first ACK from +1700 on: the session of the reading at +1800,
STEP_WAKE = 1800  # which closed the window of +900 (a reading closing no window has nothing to send)

STEP = """
BACK = {back}
STEP_AT = {step_at}
STOP = {stop}
LIDS = {lids}
atomic.makedirs("/state")
atomic.write("/state/time.json", json.dumps({{"since": START - 400 * 86400}}).encode())
stepped = []
sync = Session(DEV, KEY, rep.outbox, rep.seq, config_path="/config.json", set_time=lambda t: clock.set_time(t),
               now=lambda: clock.time(), time_path="/state/time.json")
def gateway_ack(s):
    t = clock.time()
    body = {{}}
    if not stepped and t >= START + STEP_AT:
        stepped.append(t)
        body = {{"t": t - BACK}}
    return sync.handle(frame.build(frame.ACK, DEV, s, msgpack.encode(body), KEY))
_drive = drive
def drive(coro):
    r = _drive(coro)
    if stepped and len(stepped) == 1:
        stepped.append(clock.time() - START)   # the stepping wake's end, on the stepped clock
        todo.extend(sorted(LIDS))
    if stepped and clock.time() >= START + STOP:
        plan[0] = (START + END) * 1000         # the run ends here
    return r
"""


def _stepped(mpy: Mpy, back: int, stop: int, lids: Sequence[list[Any]] = (),
             before: Sequence[list[Any]] = ()) -> dict[str, Any]:
    """One run: the clock stepped by ``back`` s (negative: forward) at the +1800 session; ``lids`` (``[s after
    START on the stepped clock, "lid"]``) after the step, ``before`` before it; stops at ``stop``."""
    pre = STEP.format(back=back, step_at=STEP_AT, stop=stop, lids=json.dumps(list(lids)))
    return _run(mpy, list(before), [[-10 * DAY, 10 * DAY]], 100 * DAY, BOOT, T0, pre=pre)


def _step_wake(run: dict[str, Any]) -> tuple[int, int]:
    """(start, end) in ms after START of the timer wake at +1800, whose session stepped the clock (its end on
    the stepped clock)."""
    (a, b), = [(a, b) for pin, a, b in run["wakes"] if not pin and a == STEP_WAKE * 1000]
    return a, b


def _after_step(run: dict[str, Any]) -> list[int]:
    """The readings (ms after START) after the stepping wake's, in order (the clock may have gone back)."""
    reads: list[int] = run["reads"]
    return reads[reads.index(STEP_WAKE * 1000 + BOOT) + 1:]


def _same(plain: dict[str, Any], lids: dict[str, Any], what: str) -> None:
    for name in OBSERVED:
        assert lids[name] == plain[name], (what, name, lids[name], plain[name])
    assert set(lids["armed"]) == set(plain["armed"]), what


def test_lid_openings_after_a_clock_set_back_do_not_move_the_readings_or_radio_starts(mpy: Mpy) -> None:
    for back in (2 * H, 3 * DAY):
        after = STEP_WAKE - back       # the stepped clock at the stepping session (s after START)
        stop = after + 2 * H
        plain = _stepped(mpy, back, stop)
        a, end = _step_wake(plain)
        assert a == STEP_WAKE * 1000, back
        assert (STEP_WAKE - back) * 1000 < end < (STEP_WAKE + 40 - back) * 1000, (back, end)   # stepped back
        reads = _after_step(plain)
        # lid openings (s after START, stepped clock): just after the stepping session (in its second and the
        # next), in the interval before the first reading, 1.5 s before it (held: its work at its instant), just
        # after it, before the second and 0.2 s before the third reading; each while the bin sleeps (until
        # 2026-12-07 one was 0.2 s before the first reading, inside the wake held from 1.5 s before it: no wake,
        # which the SIM ran as one with its clock wound back; the SIM now refuses that)
        first = reads[0] - BOOT
        at_ms = [end + 50, end + 900, end + 60000, first - 150000, first - 1500, first + 40000,
                 first + INTERVAL * 1000 - 700, first + 2 * INTERVAL * 1000 - 200]
        assert all(_asleep_at(plain, x) for x in at_ms), back
        lids = _stepped(mpy, back, stop, [[x / 1000, "lid"] for x in at_ms])
        assert len(lids["wakes"]) > len(plain["wakes"]), back   # the openings woke the bin
        _same(plain, lids, "back %d" % back)
        # a reading within interval_s of the step (before: an empty timer wake first, the reading two intervals
        # after), then one every interval_s; the timer never armed further than interval_s ahead
        assert reads[0] <= end + INTERVAL * 1000 + 1000 + BOOT, (back, reads[:2], end)
        assert [y - x for x, y in zip(reads, reads[1:])] == [INTERVAL * 1000] * (len(reads) - 1), back
        assert len(reads) >= 2 * H // INTERVAL - 1, back
        naps = [b - x for x, b in zip([w[2] for w in plain["wakes"]], plain["armed"])]
        assert max(naps) <= INTERVAL * 1000, (back, max(naps))


def test_lid_openings_before_a_clock_set_back_change_nothing_after_it(mpy: Mpy) -> None:
    # openings before the step (near the readings and between them) and after it: the same timings
    back = 2 * H
    stop = STEP_WAKE - back + H
    plain = _stepped(mpy, back, stop)
    before = _lid_events([(300 + BOOT // 1000, 0.5), (600, 1.0), (900, 0.1), (1800, 1.9), (1000, 77.0)])
    assert all(_asleep_at(plain, round(t * 1000)) for t, _ in before)
    _, end = _step_wake(plain)
    lids = _stepped(mpy, back, stop, [[(end + 400) / 1000, "lid"], [(end + 299000) / 1000, "lid"]], before)
    _same(plain, lids, "before and after")


def test_lid_openings_after_a_clock_set_forward_do_not_move_the_readings_or_radio_starts(mpy: Mpy) -> None:
    # forward by 400 s (the planned +2100 passed: the next reading 103 s late, planned from its own time) and
    # by 320 s (23 s late: within LATE_S, it keeps the chain), 40 s (the plan still ahead) and 2 h. The bin
    # sleeps to the next whole second after the session; a lid opened just before that second boots past it:
    # it then slept to the second after, the reading (and its radio start) a second late and, when later than
    # LATE_S, every later one with it
    for fwd in (400, 320, 40, 2 * H):
        stop = STEP_WAKE + fwd + H
        plain = _stepped(mpy, -fwd, stop)
        a, end = _step_wake(plain)
        assert a == STEP_WAKE * 1000 and (STEP_WAKE + fwd) * 1000 < end < (STEP_WAKE + 40 + fwd) * 1000, (fwd, end)
        reads = _after_step(plain)
        nxt = min(t for t in plain["armed"] if t > end)     # the timer the stepping wake armed
        assert reads[0] == nxt + BOOT, (fwd, reads[:1], nxt)
        sec = end // 1000 * 1000 + 1000                       # the next whole second after the session
        at_ms = [x for x in (sec - 100, sec - 250, end + 20, nxt - 1200) if x > end]
        at_ms += [reads[0] + 30000, reads[1] - BOOT - 600]
        assert all(_asleep_at(plain, x) for x in at_ms) and sec - 250 > end, (fwd, end, at_ms)
        for x in at_ms:   # each opening alone (the first two exclude each other: one is held by the other)
            lids = _stepped(mpy, -fwd, stop, [[x / 1000, "lid"]])
            _same(plain, lids, "forward %d, lid at %d" % (fwd, x))
