"""A lid wake holding a timer wake's instant keeps feeding the watchdog (real MicroPython, simulator).

The hold (``BinApp.hold_until_ms``) keeps the chip up for up to ``HOLD_MS`` (2 s) plus the boot with no work to
do: without a feed in its wait the watchdog resets a board whose ``wdt_ms`` is shorter than that (the board
loader accepts 1000 ms), and the held reading or retry slot is lost with the reset. The runs use
``test_bin_fire_radio.SIM`` with ``wdt_ms`` 1000 and every feed recorded on the simulated clock.
"""

from __future__ import annotations

from test_apps_bin import T0, Mpy, run_app
from test_bin_fire_radio import SIM

WDT_MS = 1000
FEEDS = """BOOT_MS = 300
CFG["wdt_ms"] = %d
feeds = []
hw.feed = lambda: feeds.append(clock.time_ms() - START * 1000)
""" % WDT_MS


def test_the_watchdog_is_fed_within_wdt_ms_all_through_a_hold(mpy: Mpy) -> None:
    # a tip at +200: its alarm waits out of reach (retry slots +240, +480, +960, +1920); lids opened 2.2 s before
    # the slot at +960 and 1.6 s before the reading at +1500: each lid wake (code at +0.3 s) holds about 2 s
    lids = [(960, 2.2), (1500, 1.6)]
    events = [[200, "tip"], [230, "up"]] + [[t - off, "lid"] for t, off in lids]
    res = run_app(mpy, T0, SIM.replace("PRE", FEEDS) % (events, [], 1800) + "\nprint(json.dumps([wakes, feeds]))")
    wakes, feeds = res
    for t, off in lids:
        x = round((t - off) * 1000)
        until = t * 1000 + 300                          # the held instant: the timer wake's code
        assert [a for pin, a, b in wakes if pin and a == x and b > until] == [x], (t, wakes)
        inside = [f for f in feeds if x <= f <= until]
        points = [x] + inside + [until]
        gaps = [b - a for a, b in zip(points, points[1:])]
        assert len(inside) >= 2 and max(gaps) < WDT_MS, (t, gaps)
