"""Held timer-wake work runs at its instant whatever part of the boot the ticks miss (real MicroPython, simulator).

A lid wake that holds a timer wake's instant (``BinApp.hold_until_ms``) waits until that wake's code would read the
clock: its whole second plus the boot. Until 2026-12-07 the boot was the lid wake's own ticks since the reset: on an
ESP32 the ticks start only after the ROM and bootloader, so the held work (radio start, reading, ACK times) ran that
much earlier than the timer wake's would, telling a lid opening; and a boot over ``BOOT_MAX_MS`` (2.5 s, under
``SLOT_BOOT_S``) was cut there. Now every timer wake measures its boot on the RTC (its code's clock less the instant
armed, ``bt`` in the state) and the lid wake holds until the instant plus that boot. The runs use
``test_bin_fire_radio.SIM`` with the ticks starting ``ROM_MS`` after each wake.
"""

from __future__ import annotations

from typing import Any

from test_apps_bin import T0, Mpy
from test_bin_fire_radio import sim
from test_bin_lid_hold import NAMES, OBSERVED

H = 3600


def _run(mpy: Mpy, events: list[list[Any]], boot: int, pre_tick: int) -> dict[str, Any]:
    pre = "BOOT_MS = %d\nROM_MS = %d\n" % (boot, pre_tick)
    return dict(zip(NAMES, sim(mpy, events, [[2 * H, 9 * H]], 3 * H, pre=pre, start=T0 + 10, full=True)))


def test_held_work_runs_at_the_timer_wakes_instant_to_the_ms_with_a_boot_before_ticks(mpy: Mpy) -> None:
    # fire from +250, out of reach until 2 h: lids 0.5 s before the slot at +1910 and the reading at +2400 (out of
    # reach), 1 s before the reading at +7800 (in reach); boots of 0.7 s with 0 and 150 ms of it before the
    # ticks start, and of 2.8 s (over BOOT_MAX_MS, within SLOT_BOOT_S). Before: 150 ms early, 300 ms early.
    for boot, pre_tick in ((700, 0), (700, 150), (2800, 0)):
        plain = _run(mpy, [[250, "hot"]], boot, pre_tick)
        lids = [[1909.5, "lid"], [2399.5 + boot // 1000, "lid"], [7799 + boot // 1000, "lid"]]
        held = _run(mpy, [[250, "hot"]] + lids, boot, pre_tick)
        # the readings' chain starts at the first reading, read at +boot (+X02 with 2.8 s)
        assert 1910000 + boot in {s[0] for s in plain["sessions"]}
        assert (2400 + boot // 1000) * 1000 + boot in plain["reads"]
        assert len([w for w in held["wakes"] if w[0]]) == 3
        for name in OBSERVED:
            assert held[name] == plain[name], (boot, pre_tick, name)
