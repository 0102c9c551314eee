"""Build the board's hardware objects from ``/board.json`` (ESP32 MicroPython API only)."""

import sys

# The running watchdog, if the firmware started one: a service tool that stops the firmware at the
# REPL (civicedge flash/provision/check) stretches and feeds it, since an ESP32 watchdog cannot be
# stopped and would otherwise reset the board in the middle of the session.
WATCHDOG = None


class Hardware:
    """The board's hardware objects, by io role name (``hw.pir``, ``hw.light``, ...).

    Attributes:
        cfg: the board config dict.
        io: dict role -> ``machine.Pin`` / ``machine.ADC`` / ``machine.PWM`` object.
        pulse_us: ``machine.time_pulse_us`` (ultrasonic echo timing).
        wdt: ``machine.WDT`` once :meth:`start_watchdog` ran, else None.
    """

    def __init__(self, cfg, machine):
        self.cfg = cfg
        self.machine = machine
        self.io = {}
        self.pulse_us = getattr(machine, "time_pulse_us", None)
        self.wdt = None

    def start_watchdog(self):
        """Start the hardware watchdog (cannot be stopped again on an ESP32)."""
        global WATCHDOG
        self.wdt = WATCHDOG = self.machine.WDT(timeout=self.cfg["wdt_ms"])
        return self.wdt

    def feed(self):
        """Feed the watchdog if it runs."""
        if self.wdt is not None:
            self.wdt.feed()

    def rtc(self):
        """Return ``machine.RTC()``."""
        return self.machine.RTC()

    def uart(self):
        """Return the data-link ``machine.UART`` of the board, or None if it has none."""
        link = self.cfg["links"].get("uart")
        if link is None:
            return None
        return self.machine.UART(link["id"], baudrate=link["baud"], tx=link["tx"], rx=link["rx"])


ATTEN_NAMES = {"0db": "ATTN_0DB", "2.5db": "ATTN_2_5DB", "6db": "ATTN_6DB", "11db": "ATTN_11DB"}


def make_io(machine, spec):
    """Create one hardware object from an io spec of ``/board.json``."""
    Pin = machine.Pin
    mode = spec["mode"]
    num = spec["pin"]
    if mode == "in":
        pull = {"up": Pin.PULL_UP, "down": Pin.PULL_DOWN}.get(spec.get("pull", "none"))
        if pull is None:
            return Pin(num, Pin.IN)
        return Pin(num, Pin.IN, pull)
    if mode == "out":
        return Pin(num, Pin.OUT, value=1 - spec.get("active", 1))
    if mode == "adc":
        atten = getattr(machine.ADC, ATTEN_NAMES[spec.get("atten", "11db")])
        return machine.ADC(Pin(num), atten=atten)
    if mode == "pwm":
        return machine.PWM(Pin(num), freq=spec.get("freq", 1000), duty_u16=0)
    raise ValueError("hal: unknown io mode %r" % (mode,))


def build(cfg, machine=None):
    """Create every io object of the board.

    Args:
        cfg: parsed ``/board.json``.
        machine: the ``machine`` module (injected in tests; imported when None).
    """
    if machine is None:
        import machine
    hw = Hardware(cfg, machine)
    for role in cfg["io"]:
        obj = make_io(machine, cfg["io"][role])
        hw.io[role] = obj
        setattr(hw, role, obj)  # hw.pir, hw.light, ... for the apps
    return hw


class Switch:
    """A digital input with an "active" level (a lid open, a bin tilted, motion)."""

    def __init__(self, pin, active=1):
        self.pin = pin
        self.active_level = active

    def active(self):
        return self.pin.value() == self.active_level


class Lamp:
    """Lamp dimming through PWM: level 0..100 % -> ``duty_u16``."""

    def __init__(self, pwm):
        self.pwm = pwm
        self.level = None

    def set_level(self, level):
        if level != self.level:
            self.pwm.duty_u16(level * 65535 // 100)
            self.level = level


def _trigger_delay():
    # The ESP32 needs the 10 us trigger pulse timed; elsewhere (simulator) a busy-wait on a
    # virtual clock could stall, and the simulated sensor does not look at the pulse width.
    if sys.platform == "esp32":
        import time
        return time.sleep_us
    return None


class Ultrasonic:
    """HC-SR04 / JSN-SR04T style sensor: trigger pulse, then time the echo.

    Args:
        trig: output ``Pin``.
        echo: input ``Pin``.
        pulse_us: ``machine.time_pulse_us``.
        timeout_us: echo timeout.
    """

    def __init__(self, trig, echo, pulse_us, timeout_us):
        self.trig = trig
        self.echo = echo
        self.pulse_us = pulse_us
        self.timeout_us = timeout_us
        self.delay_us = _trigger_delay()

    def ping(self):
        """One echo round-trip time in microseconds (negative on timeout)."""
        self.trig.value(1)
        if self.delay_us is not None:
            self.delay_us(10)
        self.trig.value(0)
        return self.pulse_us(self.echo, 1, self.timeout_us)
