# esp32: the ESP32 MicroPython `esp32` module subset on a civicedge virtual board.
import binascii
import json
import _simhw

WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True
HEAP_DATA = 4
HEAP_EXEC = 1


def _pins(pins):
    return json.dumps([p._id if hasattr(p, "_id") else int(p) for p in pins])


def wake_on_ext0(pin, level):
    _simhw.wake_pins(_pins([pin]) if pin is not None else "[]", 1 if level else 0)


def wake_on_ext1(pins, level):
    _simhw.wake_pins(_pins(pins or ()), 1 if level else 0)


def wake_on_gpio(pins, level):
    _simhw.wake_pins(_pins(pins or ()), 1 if level else 0)


def wake_on_touch(wake):
    pass


def raw_temperature():
    return 120


def mcu_temperature():
    return 45


def idf_heap_info(capabilities):
    return [(110000, 60000, 40000, 50000)]


class NVS:
    """Non-volatile storage namespace; kept in the board's flash directory like the NVS partition."""

    def __init__(self, namespace):
        self._ns = namespace

    def _load(self):
        raw = _simhw.nvs_get(self._ns)
        return json.loads(raw) if raw else {}

    def _store(self, d):
        _simhw.nvs_set(self._ns, json.dumps(d))

    def set_i32(self, key, value):
        d = self._load()
        d[key] = ["i", int(value)]
        self._store(d)

    def get_i32(self, key):
        d = self._load()
        if key not in d or d[key][0] != "i":
            raise OSError(-4354)  # ESP_ERR_NVS_NOT_FOUND
        return d[key][1]

    def set_blob(self, key, value):
        d = self._load()
        d[key] = ["b", binascii.hexlify(value).decode()]
        self._store(d)

    def get_blob(self, key, buffer):
        d = self._load()
        if key not in d or d[key][0] != "b":
            raise OSError(-4354)
        data = binascii.unhexlify(d[key][1])
        n = min(len(buffer), len(data))
        buffer[:n] = data[:n]
        return len(data)

    def erase_key(self, key):
        d = self._load()
        if key not in d:
            raise OSError(-4354)
        del d[key]
        self._store(d)

    def commit(self):
        pass
