"""A held retry slot reached late by a slow lid wake still sends (real MicroPython, simulator).

A lid wake holding an alarm retry slot (``BinApp.hold_until_ms``) on a board that boots slowly (2.4 s) and whose
own work (the state save) takes 700 ms reaches the slot's instant late: it reads the clock 3 s after the slot, past
``SLOT_BOOT_S``. Until 2026-12-07 ``radio_due`` then recomputed the slot from the clock, found none (out of reach,
in a watch), and the slot was skipped: no radio, and the back-off grid after it moved (a lid opening told). Now the
hold says its instant is the slot, the radio starts for it (late only by the lid wake's work), the step doubles as
at the slot's own timer wake; and the hold is decided from the clock read before that work.
"""

from __future__ import annotations

from typing import Any

from test_apps_bin import T0, Mpy
from test_bin_fire_radio import sim
from test_bin_lid_hold import NAMES, SLOW_PIN_WAKE

SLOW = "BOOT_MS = 2400\n" + SLOW_PIN_WAKE.replace("clock.ms += 80", "clock.ms += 700")


def _run(mpy: Mpy, events: list[list[Any]]) -> dict[str, Any]:
    return dict(zip(NAMES, sim(mpy, events, [], 3600, pre=SLOW, start=T0 + 10, full=True)))


def test_a_slow_lid_wake_past_the_slot_boot_still_sends_the_held_slot(mpy: Mpy) -> None:
    # fire from +250 out of reach: retry slots +350, +470, +950, +1910, +2870; a lid opened 0.1 s before +1910
    plain = _run(mpy, [[250, "hot"]])
    held = _run(mpy, [[250, "hot"], [1909.9, "lid"]])
    assert [b[1:] for b in plain["backoff"][:6]] == [[120, 350], [240, 470], [480, 950], [960, 1910],
                                                     [960, 2870], [960, 3830]]
    # the same back-off, each step taken at the same wake (the slot's: 600 ms late, the lid wake's work less
    # the 100 ms between the opening and the second), the same slots sent
    assert [b[1:] for b in held["backoff"]] == [b[1:] for b in plain["backoff"]]
    assert [1912400, 30000, 1912] in plain["sessions"]
    assert held["sessions"] == [[1913000, 30000, 1913] if s[0] == 1912400 else s for s in plain["sessions"]]
    assert held["alarms"] == plain["alarms"] and held["wins"] == plain["wins"]
