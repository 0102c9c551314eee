"""Boot decisions: recovery pin, crash counter in RTC memory, safe mode.

``boot.py`` calls :func:`decide` once per boot and the result stays in :data:`MODE` (modules
are cached, so ``main.py`` imports the same object). The crash counter lives in RTC memory,
which survives resets and deep sleep but not power loss: every boot increments it and the
running firmware clears it (:func:`mark_stable`) once it has run cleanly, so only boots that
never got that far accumulate. After ``CRASH_LIMIT`` of them the board comes up in safe mode
(no app, no watchdog, REPL free) instead of crash-looping.
"""

CRASH_LIMIT = 3
MAGIC = b"CE"

MODE = "normal"
"""``normal``, ``recovery`` (recovery pin held: main.py does nothing) or ``safe``."""
CRASHES = 0
"""Crash count seen at this boot."""


def parse_count(mem):
    """Crash count stored in RTC memory bytes (0 when absent or foreign)."""
    if len(mem) >= 3 and mem[:2] == MAGIC:
        return mem[2]
    return 0


def encode_count(n):
    """RTC memory bytes for crash count ``n`` (saturates at 255)."""
    return MAGIC + bytes((min(n, 255),))


def recovery_held(machine, cfg):
    """Whether the board's recovery pin (from /board.json) is held at its recovery level."""
    rec = cfg.get("recovery") if cfg else None
    if not rec:
        return False
    Pin = machine.Pin
    pull = Pin.PULL_UP if rec.get("level", 0) == 0 else Pin.PULL_DOWN
    pin = Pin(rec["pin"], Pin.IN, pull)
    return pin.value() == rec.get("level", 0)


def decide(machine, cfg, limit=CRASH_LIMIT):
    """Decide this boot's mode and count it; sets and returns :data:`MODE`.

    Args:
        machine: the ``machine`` module.
        cfg: parsed /board.json, or None if unreadable (then no recovery pin).
        limit: crash count from which the board enters safe mode.
    """
    global MODE, CRASHES
    if recovery_held(machine, cfg):
        MODE = "recovery"
        return MODE
    rtc = machine.RTC()
    n = parse_count(rtc.memory())
    soft = machine.reset_cause() == getattr(machine, "SOFT_RESET", -1)
    if not soft:  # a soft reset (Ctrl-D, mpremote) is an operator's action, not a crash
        n += 1
        rtc.memory(encode_count(n))
    CRASHES = n
    MODE = "safe" if n > limit else "normal"
    return MODE


def mark_stable(machine):
    """Clear the crash counter: the firmware ran cleanly (called by main after a while)."""
    global CRASHES
    machine.RTC().memory(encode_count(0))
    CRASHES = 0


def take_link_test(machine, root="/"):
    """Remove ``civicedge check``'s link-test request; return whether this start answers it.

    check writes the request (``civic.LINK_TEST`` in the flash root) just before it restarts the
    firmware with a soft reset (Ctrl-D), and the firmware then sends a boot report at once instead
    of at its next window close. The file goes before anything else runs, so a firmware that
    crashes at every start answers it at most once, and it counts only at a soft reset: a request
    found at a power-on, a watchdog reset or a deep-sleep wake was left by a check whose restart
    never happened (and a bin woken by its lid must not tell when). A request that cannot be
    removed is not answered either: it would be answered at every start.
    """
    import os

    from civic import LINK_TEST

    try:
        os.remove(root + LINK_TEST)
    except OSError:
        return False  # no request (or one that stays: see above)
    return machine.reset_cause() == getattr(machine, "SOFT_RESET", -1)
