# MicroPython test program: the real firmware BleLink (civic.uplink.ble) on the simulator's
# `bluetooth` module, with a small session that serves five prebuilt REPORT frames.
import bluetooth
from civic.uplink.ble import BleLink
from civic.wire import frame, msgpack

KEY = bytes(range(32))
DEVICE = "sl-fw-1"


class FrameSource:
    # The Session interface BleLink uses: device_id, watch, cursor, handle; and the Cursor's:
    # restart, next_frame, mark_sent, resend_in_ms (this source is its own one cursor).
    device_id = DEVICE

    def __init__(self):
        self.frames = []
        for s in range(1, 6):
            body = msgpack.encode({"t": "win", "k": "streetlight", "w": 900 * s, "l": 900,
                                   "m": {"lux": 10 * s, "energy_wh": 1000 + s}, "e": {}})
            self.frames.append((s, frame.build(frame.REPORT, DEVICE, s, body, KEY)))
        self.i = 0
        self.handled = []

    def watch(self, signal):
        self.signal = signal

    def cursor(self):
        return self

    def restart(self):
        self.i = 0

    def resend_in_ms(self, idle_ms):
        return idle_ms

    def next_frame(self):
        return self.frames[self.i] if self.i < len(self.frames) else None

    def mark_sent(self, s):
        self.i += 1

    def handle(self, data, cursor=None):
        ftype, device_id, seq, _body = frame.parse(data, KEY)
        print("handled", ftype, device_id, seq)


source = FrameSource()
link = BleLink(bluetooth.BLE(), bluetooth.UUID, source, preferred_mtu=247)
print("link up")
