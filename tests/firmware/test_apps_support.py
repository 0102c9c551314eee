"""Shared helpers of the app tests (no tests here): MicroPython-side test doubles for the hardware,
the only thing faked; a fake clock; and a reporter that keeps bodies after the core's real validation.

``prelude(board)`` returns MicroPython source that defines them and ``CFG``/``POLICY_TEXT``
for a shipped board; tests append their scenario and print JSON.
"""

from __future__ import annotations

import json

from gateway.resources import policy_path
from hil.boards import load_board

_FAKES = r'''
import json
from civic.policy import parse as parse_policy
from civic.report import Reporter, build_body
from civic.privacy.ledger import Ledger
from civic.privacy.release import Releaser

class FakePin:
    IN = 1; OUT = 3; PULL_UP = 2; PULL_DOWN = 1; IRQ_RISING = 1; IRQ_FALLING = 2
    def __init__(self, v=0):
        self.v = v; self.handler = None; self.trigger = None; self.writes = []
    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v; self.writes.append(v)
    def irq(self, handler=None, trigger=None):
        self.handler = handler; self.trigger = trigger
    def pulse(self):
        # a rising edge as the hardware would signal it
        if self.handler is not None:
            self.handler(self)

class FakeADC:
    def __init__(self, uv=0):
        self.uv = uv
    def read_uv(self):
        return self.uv

class FakePWM:
    def __init__(self):
        self.duty = None
    def duty_u16(self, d=None):
        if d is None:
            return self.duty
        self.duty = d

class FakeHW:
    def __init__(self, **io):
        self.fed = 0
        for k in io:
            setattr(self, k, io[k])
    def feed(self):
        self.fed += 1

class FakeClock:
    """Unix time t0 + ms // 1000; ticks are the ms counter (never wraps in these tests)."""
    def __init__(self, t0):
        self.t0 = t0; self.ms = 0
    def time(self):
        return self.t0 + self.ms // 1000
    def valid(self):
        return self.time() >= 1704067200
    def time_ms(self):
        return self.t0 * 1000 + self.ms
    def ticks_ms(self):
        return self.ms
    def set_time(self, t):
        self.t0 = t - self.ms // 1000

class RecReporter(Reporter):
    """The core's Reporter validation (build_body: allowlist, eps accounting), bodies kept in RAM."""
    def __init__(self, pol):
        self.policy = pol; self.sent = []; self.fw = None
    def report(self, t, w, l, m, e=None, a=None):
        self.sent.append(build_body(self.policy, t, w, l, m, e, a))
        return len(self.sent)
    def of(self, t):
        return [b for b in self.sent if b["t"] == t]

def pipeline(kind):
    pol = parse_policy(POLICY_TEXT, kind)
    try:
        import os
        os.remove("/ledger.json")
        os.remove("/ledger.json.hw")
    except OSError:
        pass
    return pol, RecReporter(pol), Releaser(pol.fields, Ledger("/ledger.json", pol.day_budgets()))
'''


def prelude(board: str) -> str:
    """MicroPython source defining the fakes, ``CFG`` (the board's /board.json) and ``POLICY_TEXT``."""
    cfg = load_board(board).to_device_config()
    return (
        "import json\n"
        f"CFG = json.loads({json.dumps(cfg)!r})\n"
        f"POLICY_TEXT = {policy_path().read_text()!r}\n"
        + _FAKES
    )


FAKE_MACHINE = r'''
class _FakeUART:
    def __init__(self, id, baudrate=115200, tx=None, rx=None):
        self.id = id; self.baudrate = baudrate; self.tx = tx; self.rx = rx
        self.out = bytearray(); self.inbox = bytearray()
    def write(self, b):
        self.out += b
        return len(b)
    def any(self):
        return len(self.inbox)
    def read(self, n=-1):
        if not self.inbox:
            return None
        n = len(self.inbox) if n is None or n < 0 else n
        d = bytes(self.inbox[:n]); self.inbox = self.inbox[n:]
        return d

class _FakeRTC:
    mem = b""
    dt = None
    def memory(self, data=None):
        if data is None:
            return _FakeRTC.mem
        _FakeRTC.mem = bytes(data)
    def datetime(self, t=None):
        if t is None:
            return _FakeRTC.dt
        _FakeRTC.dt = t

class _FakeWDT:
    started = []
    def __init__(self, timeout=5000):
        _FakeWDT.started.append(timeout); self.feeds = 0
    def feed(self):
        self.feeds += 1

class FakeMachine:
    """Stand-in for the `machine` module (hardware test double), recording what firmware does."""
    PWRON_RESET = 1; HARD_RESET = 2; WDT_RESET = 3; DEEPSLEEP_RESET = 4; SOFT_RESET = 5
    PIN_WAKE = 2; EXT1_WAKE = 3; TIMER_WAKE = 4
    cause = 1
    wake = 4
    slept = []
    resets = []
    uarts = []
    pins = {}
    adcs = {}
    Pin = FakePin
    ADC = None
    PWM = None
    RTC = _FakeRTC
    WDT = _FakeWDT
    @staticmethod
    def reset_cause():
        return FakeMachine.cause
    @staticmethod
    def wake_reason():
        return FakeMachine.wake
    @staticmethod
    def deepsleep(ms=0):
        FakeMachine.slept.append(ms)
    @staticmethod
    def reset():
        FakeMachine.resets.append(FakeMachine.RTC().memory())
    @staticmethod
    def UART(id, baudrate=115200, tx=None, rx=None):
        u = _FakeUART(id, baudrate, tx, rx); FakeMachine.uarts.append(u)
        return u
    @staticmethod
    def time_pulse_us(pin, level, timeout):
        return 575 * 2000 // 343 + 1

class _PinFactory(FakePin):
    """machine.Pin(id, mode, pull, value=...) that remembers every pin by number."""
    def __init__(self, id, mode=None, pull=None, value=None):
        # an unconnected input reads its pull level, like the real pin
        idle = 1 if pull == FakePin.PULL_UP else 0
        FakePin.__init__(self, idle if value is None else value)
        self.id = id; self.mode = mode; self.pull = pull
        FakeMachine.pins[id] = self

class _ADC(FakeADC):
    ATTN_0DB = 0; ATTN_2_5DB = 1; ATTN_6DB = 2; ATTN_11DB = 3
    def __init__(self, pin, atten=None):
        FakeADC.__init__(self, 0); self.pin = pin; self.atten = atten
        FakeMachine.adcs[pin.id] = self

class _PWM(FakePWM):
    def __init__(self, pin, freq=None, duty_u16=None):
        FakePWM.__init__(self); self.pin = pin; self.freq = freq; self.duty = duty_u16

FakeMachine.Pin = _PinFactory
FakeMachine.ADC = _ADC
FakeMachine.PWM = _PWM
'''
"""MicroPython source of a stand-in ``machine`` module; append it after :func:`prelude`."""
