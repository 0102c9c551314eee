# machine: the ESP32 MicroPython `machine` API on simulated hardware (civicedge virtual board).
# Every call goes to the simulator host through the JS module _simhw; pin numbers are checked
# against the board definition, so a pin the board does not have fails like on the board.
import binascii
import json
import _simhw

_CFG = json.loads(_simhw.config())
_PINS = set(_simhw.pins_json() and json.loads(_simhw.pins_json()))

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
PIN_WAKE = 2
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
SLEEP = 2
DEEPSLEEP = 4


def _check(pin_id):
    if not isinstance(pin_id, int) or pin_id not in _PINS:
        raise ValueError("invalid pin")
    return pin_id


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    PULL_HOLD = 4
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __init__(self, id, mode=-1, pull=-1, value=None, drive=None, hold=None):
        self._id = _check(id)
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None, drive=None, hold=None):
        _simhw.pin_init(self._id, mode, pull, -1 if value is None else (1 if value else 0))

    def value(self, v=None):
        if v is None:
            return _simhw.pin_get(self._id)
        _simhw.pin_set(self._id, 1 if v else 0)

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        _simhw.pin_set(self._id, 1)

    def off(self):
        _simhw.pin_set(self._id, 0)

    def irq(self, handler=None, trigger=3, wake=None, hard=False):
        if handler is None:
            _simhw.pin_irq(self._id, 0, None)
        else:
            pin = self
            _simhw.pin_irq(self._id, trigger, lambda: handler(pin))
        return None

    def __repr__(self):
        return "Pin(%d)" % self._id


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 0
    WIDTH_10BIT = 1
    WIDTH_11BIT = 2
    WIDTH_12BIT = 3
    # full-scale input per attenuation (microvolts), as the ESP32 ADC calibration reports
    _FULL = (950000, 1250000, 1750000, 3100000)

    def __init__(self, pin, atten=3):
        pid = pin._id if isinstance(pin, Pin) else _check(pin)
        if not _simhw.adc_ok(pid):
            raise ValueError("invalid Pin for ADC")
        self._id = pid
        self._atten = atten
        self._bits = 12

    def atten(self, a):
        self._atten = a

    def width(self, w):
        self._bits = 9 + w

    def read_uv(self):
        uv = _simhw.adc_uv(self._id)
        full = ADC._FULL[self._atten]
        return 0 if uv < 0 else (full if uv > full else uv)

    def read_u16(self):
        return self.read_uv() * 65535 // ADC._FULL[self._atten]

    def read(self):
        return self.read_uv() * ((1 << self._bits) - 1) // ADC._FULL[self._atten]


class PWM:
    def __init__(self, pin, freq=5000, duty_u16=None, duty=None, duty_ns=None):
        self._id = pin._id if isinstance(pin, Pin) else _check(pin)
        self._freq = freq
        self._duty = 0
        if duty is not None:
            duty_u16 = duty * 65535 // 1023
        self._apply(0 if duty_u16 is None else duty_u16)

    def _apply(self, d):
        self._duty = max(0, min(65535, d))
        _simhw.pwm_set(self._id, self._freq, self._duty)

    def init(self, freq=None, duty_u16=None):
        if freq is not None:
            self._freq = freq
        self._apply(self._duty if duty_u16 is None else duty_u16)

    def freq(self, f=None):
        if f is None:
            return self._freq
        self._freq = f
        self._apply(self._duty)

    def duty_u16(self, d=None):
        if d is None:
            return self._duty
        self._apply(d)

    def duty(self, d=None):
        if d is None:
            return self._duty * 1023 // 65535
        self._apply(d * 65535 // 1023)

    def deinit(self):
        _simhw.pwm_set(self._id, self._freq, 0)


class UART:
    IRQ_RX = 1
    IRQ_BREAK = 2
    IRQ_RXIDLE = 4096

    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, tx=None, rx=None, timeout=0,
                 timeout_char=0, rxbuf=256, txbuf=256):
        if not _simhw.uart_ok(id):
            raise ValueError("UART(%s) does not exist" % id)
        for p in (tx, rx):
            if p is not None:
                _check(p._id if isinstance(p, Pin) else p)
        self._id = id
        self.init(baudrate, timeout=timeout)

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, tx=None, rx=None, timeout=0, **kw):
        self._baud = baudrate
        self._timeout = timeout
        _simhw.uart_init(self._id, baudrate)

    def deinit(self):
        _simhw.uart_irq(self._id, 0, None)

    def irq(self, handler=None, trigger=0, hard=False):
        # The simulated line goes idle after each chunk the host delivers: RX and RXIDLE both
        # fire once per chunk, after the bytes are readable.
        if handler is None or not trigger & (UART.IRQ_RX | UART.IRQ_RXIDLE):
            _simhw.uart_irq(self._id, 0, None)
        else:
            uart = self
            _simhw.uart_irq(self._id, trigger, lambda: handler(uart))
        return None

    def any(self):
        return _simhw.uart_any(self._id)

    def read(self, n=-1):
        data = _simhw.uart_read(self._id, -1 if n is None else n)
        return binascii.unhexlify(data) if data else None

    def readinto(self, buf, n=-1):
        data = self.read(len(buf) if n < 0 else min(n, len(buf)))
        if not data:
            return None
        buf[:len(data)] = data
        return len(data)

    def readline(self):
        data = _simhw.uart_readline(self._id)
        return binascii.unhexlify(data) if data else None

    def write(self, buf):
        if isinstance(buf, str):
            buf = buf.encode()
        _simhw.uart_write(self._id, binascii.hexlify(buf).decode())
        return len(buf)

    def flush(self):
        pass

    def txdone(self):
        return True


def time_pulse_us(pin, pulse_level, timeout_us=1000000):
    return _simhw.time_pulse_us(pin._id, pulse_level, timeout_us)


class RTC:
    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        import time
        if dt is None:
            ms = int(_simhw.time_ms())
            t = time.gmtime(ms // 1000)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], (ms % 1000) * 1000)
        secs = time.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], dt[3], 0))
        _simhw.rtc_set_ms(str(secs * 1000 + (dt[7] // 1000 if len(dt) > 7 else 0)))

    def init(self, dt):
        self.datetime(dt)

    def memory(self, data=None):
        if data is None:
            return binascii.unhexlify(_simhw.rtc_mem_get())
        if len(data) > 2048:
            raise ValueError("buffer too long")
        _simhw.rtc_mem_set(binascii.hexlify(data).decode())


class WDT:
    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("WDT timeout too short")
        _simhw.wdt_start(timeout)

    def feed(self):
        _simhw.wdt_feed()


class _Halted(BaseException):
    """Raised after a deep sleep / reset request: the chip stops here, nothing else runs."""


def deepsleep(time_ms=0):
    _simhw.deepsleep(time_ms)
    raise _Halted("deepsleep")


def lightsleep(time_ms=0):
    _simhw.sleep_ms(time_ms)


def idle():
    pass


def reset():
    _simhw.reset()
    raise _Halted("reset")


def soft_reset():
    _simhw.soft_reset()
    raise _Halted("soft_reset")


def reset_cause():
    return _simhw.reset_cause()


def wake_reason():
    return _simhw.wake_reason()


def unique_id():
    return binascii.unhexlify(_simhw.unique_id())


def freq(hz=None):
    if hz is None:
        return 160000000
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def bootloader():
    reset()
