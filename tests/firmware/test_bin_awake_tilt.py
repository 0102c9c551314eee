"""A tilt while the bin is up is seen at once (real MicroPython, simulator).

The tilt pin wakes only a sleeping chip. While a lid wake holds the instant of a timer wake (``BinApp.hold_until_ms``)
or a radio session lingers, the chip is up: until 2026-12-07 nothing looked at the tilt then, and a bin tipped over
during a held retry slot (no reading due) raised its tip alarm only at the next reading, or never if it was put
upright before it (the sleep after the hold does not arm an active tilt pin). Now the bin polls the tilt every
``POLL_MS`` while up and raises the alarm as a tilt wake would: at once, the radio started.

The runs use ``test_bin_fire_radio.SIM``; the tilt pin here follows the simulated clock (tilted in the given
intervals), so a tilt during a wake is a level the bin can see, not a wake of its own.
"""

from __future__ import annotations

from typing import Any

from clock_pins import clock_pin
from test_apps_bin import T0, Mpy
from test_bin_fire_radio import sim

POLL_MS = 100  # civic.apps.bin.POLL_MS
NAMES = ("sessions", "acked", "alarms", "wins", "left", "dropped", "armed", "acked_ms", "reads", "backoff", "wakes")
BOOT_MS = 700


def _run(mpy: Mpy, events: list[list[Any]], tilted: list[tuple[int, int]]) -> dict[str, Any]:
    res = sim(mpy, events, [], 3600, pre="BOOT_MS = %d\n" % BOOT_MS + clock_pin("tilt", tilted), full=True)
    return dict(zip(NAMES, res))


def test_a_tilt_while_a_lid_wake_holds_a_retry_slot_raises_the_tip_alarm_at_once(mpy: Mpy) -> None:
    # a tip at +200 (its alarm waits out of reach: retry slots +240, +480, +960, +1920, +2880), a lid opened at
    # +2878.5 (awake from then: it holds the slot at +2880, which takes no reading), the bin tipped over at
    # +2879.5 and put upright at +2950 or +4000. Before: no second alarm (+2950) or one at the reading at +3000.
    for up in (2950000, 4000000):
        tilted = [(200000, 230000), (2879500, up)]
        plain = _run(mpy, [[200, "tip"], [2879.5, "tip"]], tilted)       # the tilt is its own wake
        held = _run(mpy, [[200, "tip"], [2878.5, "lid"]], tilted)
        assert any(pin and a < 2879500 < b for pin, a, b in held["wakes"]), up  # up, holding, when tipped
        assert [a[0] for a in plain["alarms"]] == [["tip"], ["tip"]] == [a[0] for a in held["alarms"]], up
        # the radio starts at the first poll after the tilt, sooner than the tilt wake's boot would start it
        tilt_starts = [s[0] for s in held["sessions"] if 2879500 <= s[0] < 2880700]
        assert tilt_starts and tilt_starts[0] - 2879500 < POLL_MS, (up, held["sessions"])
        assert min(s[0] for s in plain["sessions"] if s[0] >= 2879500) == 2879500 + 700
        # raised in the second of the tilt (alarms are dated to the minute), its retries on the grid from there: the
        # session from the tilt passed the slot +2880 unacknowledged (the step doubled at its end)
        assert held["alarms"][1] == [["tip"], 2820] and plain["alarms"][1] == [["tip"], 2880], up
        assert [2909500, 240, 3120] in held["backoff"], (up, held["backoff"])


def test_a_tilt_during_a_radio_session_raises_the_tip_alarm_in_it(mpy: Mpy) -> None:
    # the reading at +3000 (read at +3000.7) lingers 30 s out of reach (the first tip's alarm waits); the bin is
    # tipped over from +3010 to +3015 only, upright again before the next reading. Before: never alarmed.
    tilted = [(200000, 230000), (3010000, 3015000)]
    run = _run(mpy, [[200, "tip"]], tilted)
    assert any(not pin and a < 3010000 and b > 3015000 for pin, a, b in run["wakes"])  # lingering then
    assert run["alarms"] == [[["tip"], 180], [["tip"], 3000]]
    # raised in that session (the step back to 120 s, the next slot after +3010 at +3120, kept at its end)
    assert [3030700, 120, 3120] in run["backoff"], run["backoff"]
