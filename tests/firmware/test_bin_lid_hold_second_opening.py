"""A second lid opening while a lid wake holds a timer wake's instant is counted (real MicroPython, simulator).

The lid pin wakes only a sleeping chip. A lid wake that holds (``BinApp.hold_until_ms``) is up for up to 2 s plus
the boot: until 2026-12-07 an opening then was lost, where without the hold it would have been a lid wake of its
own, counted if past the refractory time. Now the hold polls the lid pin and counts an opening edge as that wake
would have (the refractory on the RTC). The lid pin here follows the simulated clock (open in given intervals);
only the first opening is a wake.
"""

from __future__ import annotations

from typing import Any

from clock_pins import clock_pin
from test_apps_bin import T0, Mpy, run_app
from test_bin_fire_radio import SIM

BOOT_MS = 1000
REFRACTORY = """_mk = make_app
def make_app():
    a = _mk(); a.lid_refractory_s = %d; return a
"""


def _lid_count(mpy: Mpy, opened: list[tuple[int, int]], refractory_s: int) -> Any:
    pre = "BOOT_MS = %d\n" % BOOT_MS + clock_pin("lid", opened) + REFRACTORY % refractory_s
    text = SIM.replace("PRE", pre) % ([[opened[0][0] / 1000, "lid"]], [], 1500)
    return run_app(mpy, T0, text + "\nprint(json.dumps([app.state['lid'], wakes]))")


def test_a_second_opening_during_a_hold_is_counted_past_the_refractory(mpy: Mpy) -> None:
    # the reading at +900 (its code at +901.0, a 1-s boot); a lid opened at +898.1 (code at +899.1: it holds until
    # +901.0) and again at +900.6 for 0.3 s, while it holds. Before: one opening counted
    one = [(898100, 899500)]
    two = one + [(900600, 900900)]
    for refractory_s, counted in ((2, 2), (5, 1)):          # +900 is 2 s after +898 (seconds of the RTC)
        n, wakes = _lid_count(mpy, two, refractory_s)
        assert [w[1] for w in wakes if w[0]] == [898100] and all(b > 901000 for p, a, b in wakes if p), wakes
        assert n == counted, (refractory_s, n)
        assert _lid_count(mpy, one, refractory_s)[0] == 1
