"""Sleep, wake sources and reset causes (ESP32 and ESP32-C3)."""


def arm_wake_pins(pins, level=1, esp32_mod=None):
    """Make these input pins wake the chip from deep sleep when one reaches ``level``.

    The ESP32-C3 has ``esp32.wake_on_gpio(pins, level)``; the ESP32 uses
    ``esp32.wake_on_ext1(pins, WAKEUP_ANY_HIGH / WAKEUP_ALL_LOW)``. Returns True if a wake
    source was armed (False where the port has none, e.g. a simulator without wake pins).
    """
    if not pins:
        return False
    if esp32_mod is None:
        try:
            import esp32 as esp32_mod
        except ImportError:
            return False
    if hasattr(esp32_mod, "wake_on_gpio"):
        esp32_mod.wake_on_gpio(pins, level)
        return True
    if hasattr(esp32_mod, "wake_on_ext1"):
        esp32_mod.wake_on_ext1(pins, esp32_mod.WAKEUP_ANY_HIGH if level else esp32_mod.WAKEUP_ALL_LOW)
        return True
    return False


def woke_from_deepsleep(machine):
    """Whether this boot is a wake from deep sleep (not power-on or a crash)."""
    return machine.reset_cause() == machine.DEEPSLEEP_RESET


def woke_by_pin(machine):
    """Whether a GPIO (not the timer) ended the deep sleep."""
    reason = machine.wake_reason()
    return reason in (getattr(machine, "PIN_WAKE", -1), getattr(machine, "EXT1_WAKE", -1), getattr(machine, "EXT0_WAKE", -1))
