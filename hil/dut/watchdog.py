"""Code that holds a stopped firmware's watchdog, for the tools that stop it at the REPL.

An ESP32 watchdog cannot be stopped, only given a new timeout (creating a WDT again reconfigures the
running one on the ESP32 port) and fed, through the firmware's object (``civic.hal.hardware.WATCHDOG``).
Without this, a board whose firmware started its watchdog (``wdt_ms`` in its board definition, 30 s
for the shipped boards; 100 ms of wall time for a virtual board at 300x) resets in the middle of a
REPL session. Any exception from the second WDT() is ignored (the ESP32 port raises OSError when the
task is already subscribed, other ports ValueError or OverflowError for a timeout they cannot take):
the feed that follows still runs.

The code is kept short: :class:`hil.dut.Dut` may send it in the same write as the Ctrl-C that stops
the firmware, and that write must fit a board's small console input buffer.
"""

from __future__ import annotations

# Longest timeout ever sent (ms): the simulator's timers, like Node's, and MicroPython's small ints
# on 32-bit ports take at most 2**31 - 1.
HOLD_WATCHDOG_MAX_MS = 2**31 - 1

# ``HOLD_WATCHDOG_CODE % timeout_ms``: prints True if a watchdog was held, False when the firmware
# started none (unprovisioned, safe or recovery mode, a bare MicroPython). ``WATCHDOG`` is None or a
# machine.WDT, which is always true. Prefer :func:`hold_watchdog_code`, which bounds the timeout.
HOLD_WATCHDOG_CODE = """\
import sys
_w=getattr(sys.modules.get('civic.hal.hardware'),'WATCHDOG',None)
if _w:
 try:import machine;machine.WDT(timeout=%d)
 except Exception:pass
 _w.feed()
print(bool(_w))
del _w
"""


def hold_watchdog_code(timeout_ms: int) -> str:
    """:data:`HOLD_WATCHDOG_CODE` for ``timeout_ms``, bounded to 1 .. :data:`HOLD_WATCHDOG_MAX_MS`."""
    return HOLD_WATCHDOG_CODE % max(1, min(HOLD_WATCHDOG_MAX_MS, int(timeout_ms)))
