"""Code that holds a stopped firmware's watchdog, for the tools that stop it at the REPL.

An ESP32 watchdog cannot be stopped, only given a new timeout (creating a WDT again reconfigures the
running one on the ESP32 port) and fed, through the firmware's object (``civic.hal.hardware.WATCHDOG``).
Without this, a board whose firmware started its watchdog (``wdt_ms`` in its board definition, 30 s
for the shipped boards; 100 ms of wall time for a virtual board at 300x) resets in the middle of a
REPL session. An OSError from the second WDT() (the task may already be subscribed) is ignored: the
feed that follows still runs.
"""

from __future__ import annotations

# ``HOLD_WATCHDOG_CODE % timeout_ms``: prints True if a watchdog was held, False when the firmware
# started none (unprovisioned, safe or recovery mode, a bare MicroPython).
HOLD_WATCHDOG_CODE = """\
def _civic_hold(ms):
    import sys
    wdt = getattr(sys.modules.get("civic.hal.hardware"), "WATCHDOG", None)
    if wdt is None:
        return False
    import machine
    try:
        machine.WDT(timeout=ms)
    except OSError:
        pass
    wdt.feed()
    return True
print(repr(_civic_hold(%d)))
del _civic_hold
"""
