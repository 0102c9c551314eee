"""UART and BLE links with the session logic, in MicroPython, against small fake uart/ble objects.

The fakes are test doubles for the hardware edge only (``machine.UART``, ``bluetooth.BLE``);
frames from the gateway side are built here in CPython with ``hmac`` and ``msgpack``.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any, Callable

import msgpack

KEY = bytes.fromhex("22" * 32)
DEV = "sl-7"
NOW = 1795000000


def gw_frame(ftype: int, seq: int, body: dict[str, Any], dev: str = DEV, key: bytes = KEY) -> bytes:
    head = bytes([2, ftype, len(dev)]) + dev.encode() + seq.to_bytes(4, "big") + msgpack.packb(body, use_bin_type=True)
    return head + hmac.new(key, head, hashlib.sha256).digest()[:16]


def cobs_ref(data: bytes) -> bytes:
    out, block = bytearray(), bytearray()
    for b in data:
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out += b"\xff" + block
                block = bytearray()
    out += bytes([len(block) + 1]) + block
    return bytes(out)


def cobs_dec(data: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(data):
        code = data[i]
        out += data[i + 1:i + code]
        i += code
        if code != 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


COMMON = f"""
import binascii, json
from civic.store.seq import SeqCounter
from civic.store.outbox import Outbox
from civic.uplink.session import Session
from civic.wire import frame, msgpack
KEY = binascii.unhexlify({KEY.hex()!r})
clock = [{NOW}]
ticks = [0]
synced = []
configs = []
def set_time(t):
    synced.append(t)
    clock[0] = t
S = SeqCounter('/flash/seq.bin')
O = Outbox('/flash/outbox', 16)
sess = Session({DEV!r}, KEY, O, S, set_time=set_time, now=lambda: clock[0], config_path='/flash/config.json',
               config_keys=('courtesy_s', 'dim_schedule'), on_config=configs.append, resend_ms=1000,
               ticks_ms=lambda: ticks[0])
def queue(n):
    for _ in range(n):
        s = S.next()
        O.append(s, frame.build(frame.REPORT, {DEV!r}, s, msgpack.encode({{'t': 'win', 'n': s}}), KEY))
class FakeUart:
    def __init__(self):
        self.rx = bytearray()
        self.tx = bytearray()
    def any(self):
        return len(self.rx)
    def read(self, n):
        d = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return d
    def write(self, b):
        self.tx.extend(b)
        return len(b)
"""

UART = COMMON + "from civic.uplink.uart import UartLink\nU = FakeUart()\nL = UartLink(U, sess)\n"


def _sent_frames(hexdump: str) -> list[bytes]:
    raw = bytes.fromhex(hexdump)
    assert raw.endswith(b"\x00")
    return [cobs_dec(chunk) for chunk in raw.split(b"\x00")[:-1]]


def _check_report(data: bytes, seq: int) -> None:
    assert hmac.compare_digest(hmac.new(KEY, data[:-16], hashlib.sha256).digest()[:16], data[-16:])
    assert data[1] == 1 and data[3:3 + len(DEV)].decode() == DEV
    assert int.from_bytes(data[3 + len(DEV):7 + len(DEV)], "big") == seq


def test_uart_sends_outbox_and_applies_cumulative_ack(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    ack = gw_frame(2, 2, {"t": NOW + 100})
    code = UART + (
        "queue(3)\nprint(L.pump())\nprint(binascii.hexlify(U.tx).decode())\nU.tx = bytearray()\n"
        "print(L.pump())\n"  # nothing due until ACK or timeout
        # garbage, a cut frame and a zero-run before the ACK: resync at the next 0x00
        f"U.rx.extend(b'\\x07garbage\\x00\\x05\\x01\\x00\\x00' + binascii.unhexlify({cobs_ref(ack).hex()!r}) + b'\\x00')\n"
        "L.poll()\nprint(O.pending(), synced, L.cobs_errors, sess.stats['acks'])\n"
    )
    lines = flash_run(code, flash).stdout.splitlines()
    assert lines[0] == "3"
    frames = _sent_frames(lines[1])
    assert len(frames) == 3
    for i, f in enumerate(frames, 1):
        _check_report(f, i)
    assert lines[2] == "0"
    assert lines[3] == f"[3] [{NOW + 100}] 2 1"
    # reboot: the un-acked frame 3 is still there and is sent again
    code = UART + "L.cur.restart()\nprint(O.pending(), L.pump())\nprint(binascii.hexlify(U.tx).decode())\n"
    lines = flash_run(code, flash).stdout.splitlines()
    assert lines[0] == "[3] 1"
    [again] = _sent_frames(lines[1])
    _check_report(again, 3)


def test_uart_resends_after_timeout_and_ignores_bad_acks(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    bad = [
        gw_frame(2, 1, {"t": NOW}, key=bytes(32)),       # wrong key
        gw_frame(2, 1, {"t": NOW}, dev="sl-8"),          # another device
        gw_frame(2, 99, {"t": NOW}),                     # above the highest sent seq
        gw_frame(1, 1, {"t": NOW}),                      # a REPORT from the gateway?
        gw_frame(2, 1, {"t": NOW})[:-20] + gw_frame(2, 1, {"t": NOW})[-16:],  # truncated body
    ]
    stream = b"".join(cobs_ref(f) + b"\x00" for f in bad)
    small_drift = cobs_ref(gw_frame(2, 1, {"t": NOW + 2})) + b"\x00"
    code = UART + (
        "queue(2)\nL.pump()\nticks[0] = 999\nprint(L.pump())\nticks[0] = 1000\nprint(L.pump())\n"
        f"U.rx.extend(binascii.unhexlify({stream.hex()!r}))\nL.poll()\n"
        "print(O.pending(), sess.stats['bad'], synced)\n"
        f"U.rx.extend(binascii.unhexlify({small_drift.hex()!r}))\nL.poll()\n"
        "print(O.pending(), synced)\n"
    )
    assert flash_run(code, tmp_path / "flash").stdout.splitlines() == ["0", "2", "[1, 2] 5 []", "[2] []"]


def test_resend_interval_backs_off_on_a_dead_link_and_resets_on_ack(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """No ACK: re-send after 1 s, then 2 s, 4 s, 8 s, capped at resend_max_ms (8 s here); an ACK
    (or a link that comes back) returns to 1 s. resend_in_ms tells the link how long to sleep."""
    ack = cobs_ref(gw_frame(2, 1, {"t": NOW})) + b"\x00"
    code = UART + (
        "sess.resend_max_ms = 8000\nqueue(2)\nsends = []\n"
        "for t in range(0, 40001, 250):\n"
        "    ticks[0] = t\n"
        "    if L.pump():\n        sends.append(t)\n"
        "print(sends, L.cur.resend_in_ms(60000))\n"
        f"U.rx.extend(binascii.unhexlify({ack.hex()!r}))\nL.poll()\n"
        "print(L.cur.wait_ms, O.pending())\n"
        "ticks[0] = 41000\nprint(L.pump(), L.cur.resend_in_ms(60000))\n"
        "L.cur.wait_ms = 8000\nL.cur.restart()\nprint(L.cur.wait_ms)\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    # first send at 0; re-sends 1 s, 2 s, 4 s, 8 s, 8 s ... after the previous one
    assert lines[0] == "[0, 1000, 3000, 7000, 15000, 23000, 31000, 39000] 7000"
    # after the ACK of seq 1, seq 2 is re-sent 1 s (not 8 s) after the last send; then 2 s again
    assert lines[1:] == ["1000 [2]", "1 2000", "1000"]


def test_config_applied_once_persisted_and_filtered(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    c5 = gw_frame(3, 5, {"courtesy_s": 30, "dim_schedule": [[22, 50]], "k": 1, "x": b"raw"})
    c4 = gw_frame(3, 4, {"courtesy_s": 99})
    c6 = gw_frame(3, 6, {"courtesy_s": 45, "key": "ignored", "dim_schedule": b"\x00"})
    code = COMMON + "".join(f"print(sess.handle(binascii.unhexlify({c.hex()!r})))\n" for c in (c5, c5, c4)) + (
        "print(len(configs), sorted(configs[0].items()))\n"
    )
    assert flash_run(code, flash).stdout.splitlines() == [
        "config", "stale", "stale", "1 [('courtesy_s', 30), ('dim_schedule', [[22, 50]])]"]
    # after a reboot the applied seq is remembered; a newer CONFIG updates the keys it names
    code = COMMON + f"print(sess.handle(binascii.unhexlify({c5.hex()!r})))\n" + (
        f"print(sess.handle(binascii.unhexlify({c6.hex()!r})))\nprint(sess.config['seq'], configs[-1]['courtesy_s'], configs[-1]['dim_schedule'])\n"
    )
    assert flash_run(code, flash).stdout.splitlines() == ["stale", "config", "6 45 [[22, 50]]"]


def test_uart_run_task_with_asyncio(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """The real asyncio loop drives the link: frames go out, the ACK arrives later, the task stops."""
    ack = cobs_ref(gw_frame(2, 2, {"t": NOW})) + b"\x00"
    code = UART + (
        "import asyncio\nqueue(2)\nL.poll_ms = 5\n"
        "async def gateway():\n"
        "    while len(U.tx) == 0:\n        await asyncio.sleep_ms(5)\n"
        f"    U.rx.extend(binascii.unhexlify({ack.hex()!r}))\n"
        "    while O.pending():\n        await asyncio.sleep_ms(5)\n"
        "    L.stop()\n    print('DONE', sess.stats['sent'], sess.stats['acks'])\n"
        "asyncio.create_task(L.run())\nasyncio.create_task(gateway())\n"
    )
    # the loop runs after the script returns; the flash dump happens first, so only check stdout
    out = flash_run(code, tmp_path / "flash").stdout
    assert "DONE 2 1" in out


BLE = COMMON + """
from civic.uplink import ble as blemod
class FakeUUID:
    def __init__(self, s):
        self.s = s
    def __repr__(self):
        return 'UUID(%s)' % self.s
class FakeBle:
    def __init__(self):
        self.notified = []
        self.values = {}
        self.adv = []
        self.handler = None
        self.fail_next = 0
    def active(self, on=None):
        return True
    def config(self, **kw):
        self.cfg = kw
    def irq(self, fn):
        self.handler = fn
    def gatts_register_services(self, services):
        self.services = services
        return ((10, 12),)
    def gatts_set_buffer(self, h, n, append=False):
        self.buf = (h, n)
    def gap_advertise(self, interval, adv_data=None, resp_data=None, connectable=True):
        self.adv.append((interval, adv_data, resp_data, connectable))
    def gatts_notify(self, conn, h, data):
        if self.fail_next:
            self.fail_next -= 1
            raise OSError(12)
        self.notified.append((conn, h, bytes(data)))
    def gatts_read(self, h):
        return self.values[h]
    def write(self, conn, h, data):
        self.values[h] = data
        self.handler(3, (conn, h))
B = FakeBle()
L = blemod.BleLink(B, FakeUUID, sess)
"""

# The BLE double as the real stack behaves where a test needs it: a fresh bytes object per gatts_read (the
# shared double returns the stored one) and the disconnects the link asked for. Tests put it in place of the
# shared double's board: BLE.replace(BLE_LINK_LINE, STACK_BLE + "B = StackBle()\n" + their own link line).
BLE_LINK_LINE = "L = blemod.BleLink(B, FakeUUID, sess)"
STACK_BLE = """
class StackBle(FakeBle):
    def __init__(self):
        FakeBle.__init__(self)
        self.disconnects = []
    def gatts_read(self, h):
        return bytes(self.values[h])
    def gap_disconnect(self, conn):
        self.disconnects.append(conn)
        return True
"""


def _reassemble(notes: list[tuple[int, int, bytes]]) -> list[bytes]:
    frames, cur = [], bytearray()
    for _conn, handle, data in notes:
        assert handle == 10
        cur += data[2:]
        if data[1] & 0x80:
            frames.append(bytes(cur))
            cur = bytearray()
    return frames


def test_ble_service_advertising_and_fragments(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    ack_frags = []
    ack = gw_frame(2, 3, {"t": NOW + 10})
    for i in range(0, len(ack), 18):
        last = i + 18 >= len(ack)
        ack_frags.append(bytes([9, (i // 18) | (0x80 if last else 0)]) + ack[i:i + 18])
    code = BLE + (
        "print(B.services)\nprint(B.buf, B.cfg)\nprint(binascii.hexlify(B.adv[0][1]).decode(), B.adv[0][2], B.adv[0][3])\n"
        "queue(3)\nprint(L.pump())\n"                      # not connected: nothing sent
        "B.handler(1, (7, 0, b'addr'))\nprint(L.pump(limit=2))\n"
        "B.handler(21, (7, 100))\nprint(L.pump())\n"
        "print(repr(B.notified))\n"
        f"for f in {[f.hex() for f in ack_frags]!r}:\n    B.write(7, 12, binascii.unhexlify(f))\n"
        "B.write(5, 12, b'\\x00\\x80junk')\n"          # another connection: ignored
        "L.poll()\nprint(O.pending(), synced, L.reassembler.dropped)\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines[0] == ("((UUID(6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e), ((UUID(6c3e0002-4a5e-4c1b-9b9e-0c1c1ce0ed9e), 18), "
                        "(UUID(6c3e0003-4a5e-4c1b-9b9e-0c1c1ce0ed9e), 12))),)")
    assert lines[1] == "(12, 512) {'mtu': 247}"
    adv_hex, name, connectable = lines[2].split()
    assert adv_hex == "020106" + "1107" + bytes.fromhex("6c3e00014a5e4c1b9b9e0c1c1ce0ed9e")[::-1].hex()
    assert name == "b'\\x05\\tsl-7'" and connectable == "True"
    assert lines[3:6] == ["0", "2", "1"]
    notes = eval(lines[6])
    mtu23 = [n for n in notes if len(n[2]) <= 20]
    assert all(n[0] == 7 for n in notes)
    assert max(len(n[2]) for n in notes[:len(mtu23)]) == 20  # MTU 23 -> 20-byte notifications
    assert len(notes[-1][2]) <= 95 and len(notes[-1][2]) > 20  # MTU 100 after the exchange
    frames = _reassemble(notes)
    assert len(frames) == 3
    for i, f in enumerate(frames, 1):
        _check_report(f, i)
    assert lines[7] == f"[] [{NOW + 10}] 0"


def test_ble_disconnect_drops_partial_and_resends(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    ack = gw_frame(2, 1, {"t": NOW})
    code = BLE + (
        "queue(2)\nB.handler(1, (3, 0, b'a'))\nB.fail_next = 1\nprint(L.pump(), L.notify_errors)\n"
        "print(L.pump())\n"
        f"B.write(3, 12, bytes((1, 0)) + binascii.unhexlify({ack.hex()!r})[:18])\n"
        "L.poll()\nB.handler(2, (3, 0, b'a'))\nL.poll()\n"
        "print(L.conn, len(B.adv), L.reassembler.dropped, O.pending())\n"
        "n = len(B.notified)\nB.handler(1, (4, 0, b'b'))\nprint(L.pump(), len(B.notified) > n)\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == ["0 1", "2", "None 2 1 [1, 2]", "2 True"]


# as the runtime builds a streetlight: the UART's link (and cursor) first, then BLE's
UART_AND_BLE = BLE.replace("L = blemod.BleLink(", "from civic.uplink.uart import UartLink\nU = FakeUart()\n"
                           "LU = UartLink(U, sess)\nL = blemod.BleLink(", 1)


def test_each_link_has_its_own_send_position(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """A streetlight sends on UART and BLE from one session. A UART that nobody reads must not
    take the frames from BLE: once it misses an ACK, BLE sends every frame itself; an ACK on either
    link settles both, and only the link an ACK came in on leaves its backoff."""
    ack2 = gw_frame(2, 2, {"t": NOW})
    ack3 = gw_frame(2, 3, {"t": NOW})
    code = UART_AND_BLE + (
        "B.handler(1, (7, 0, b'a'))\n"                            # BLE connected before any frame
        "queue(2)\nprint(LU.pump(), L.pump())\n"                  # the UART goes first; BLE holds back
        "ticks[0] = 1000\nprint(LU.pump(), LU.cur.works, L.pump())\n"   # no ACK on the UART: BLE sends
        "print(repr(B.notified))\nB.notified = []\n"
        f"B.write(7, 12, bytes((1, 0x80)) + binascii.unhexlify({ack2.hex()!r}))\nL.poll()\n"
        "ticks[0] = 10000\n"                                       # long past the resend interval
        "print(O.pending(), LU.pump(), L.pump(), LU.cur.resend_in_ms(60000), L.cur.resend_in_ms(60000))\n"
        "queue(1)\nsends = []\n"                                   # seq 3: no ACK on either link
        "for t in (10000, 11000, 13000):\n"
        "    ticks[0] = t\n    sends.append((LU.pump(), L.pump()))\n"
        "print(sends, LU.cur.wait_ms, L.cur.wait_ms)\n"
        f"B.write(7, 12, bytes((2, 0x80)) + binascii.unhexlify({ack3.hex()!r}))\nL.poll()\n"
        "print(O.pending(), LU.cur.wait_ms, L.cur.wait_ms, LU.cur.resend_in_ms(60000), L.cur.resend_in_ms(60000))\n"
        "print(binascii.hexlify(U.tx).decode())\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines[0] == "2 0"
    assert lines.pop(1) == "2 False 2"
    notes = eval(lines[1])
    frames = _reassemble(notes)
    assert len(frames) == 2
    for i, f in enumerate(frames, 1):
        _check_report(f, i)
    # the ACK on BLE settled the UART's frames too: neither link re-sends, neither waits
    assert lines[2] == "[] 0 0 60000 60000"
    # both links re-send seq 3 after 1 s, then 2 s; the ACK on BLE resets BLE's backoff only
    # (the UART's backoff is 2 s already: its first round went unanswered)
    assert lines[3] == "[(1, 1), (0, 1), (1, 1)] 4000 4000"
    assert lines[4] == "[] 4000 1000 60000 60000"
    uart_frames = _sent_frames(lines[5])
    assert [int.from_bytes(f[3 + len(DEV):7 + len(DEV)], "big") for f in uart_frames] == [1, 2, 1, 2, 3, 3]


def test_ble_holds_frames_back_while_the_uart_works_and_takes_over_when_it_stops(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """Review finding: with both links sending everything, a streetlight whose UART delivers raced
    its reports over BLE too, and a BLE link that won once kept one of the gateway's few BLE slots.
    A later link now holds a frame back for resend_ms while an earlier one works."""
    ack = {n: cobs_ref(gw_frame(2, n, {"t": NOW})) + b"\x00" for n in (1, 2)}
    ack[4] = gw_frame(2, 4, {"t": NOW})  # on BLE: a fragment, not COBS
    code = UART_AND_BLE + (
        "B.handler(1, (7, 0, b'a'))\n"
        # the UART works: frame 1 is answered on it
        "queue(1)\nprint(LU.pump(), L.pump())\n"
        f"U.rx.extend(binascii.unhexlify({ack[1].hex()!r}))\nLU.poll()\nprint(LU.cur.works, O.pending())\n"
        # frame 2: BLE holds it; the UART's ACK comes 300 ms later, and BLE never sends it
        "ticks[0] = 100\nqueue(1)\nprint(L.pump(), L.cur.resend_in_ms(60000), LU.pump())\n"
        f"ticks[0] = 400\nU.rx.extend(binascii.unhexlify({ack[2].hex()!r}))\nLU.poll()\n"
        "ticks[0] = 1200\nprint(L.pump(), L.cur.resend_in_ms(60000), len(B.notified))\n"
        # frame 3: the UART stops answering; BLE sends it resend_ms after it first saw it
        "ticks[0] = 2000\nqueue(1)\nprint(LU.pump(), L.pump())\n"
        "ticks[0] = 2999\nprint(L.pump())\nticks[0] = 3000\nprint(L.pump(), len(B.notified) > 0)\n"
        # the UART's own timeout: it no longer counts as working, so frame 4 goes out on both at once
        "print(LU.pump(), LU.cur.works)\nqueue(1)\nprint(LU.pump(), L.pump())\n"
        # an ACK of 4 on BLE leaves the UART's backoff, and settles both
        f"B.write(7, 12, bytes((1, 0x80)) + binascii.unhexlify({ack[4].hex()!r}))\nL.poll()\n"
        "print(O.pending(), LU.cur.wait_ms, L.cur.wait_ms, L.cur.works)\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines[0] == "1 0"                  # the UART is presumed to work from its start
    assert lines[1] == "True []"
    assert lines[2] == "0 1000 1"             # held back, due again in resend_ms
    assert lines[3] == "0 60000 " + lines[3].split()[-1]
    assert lines[4:7] == ["1 0", "0", "1 True"]
    assert lines[7] == "1 False"              # the UART re-sends frame 3 and counts as down
    assert lines[8] == "1 1"
    assert lines[9] == "[] 2000 1000 True"


def test_an_ack_on_one_link_below_what_the_other_sent_keeps_its_resend_timer(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    ack3 = cobs_ref(gw_frame(2, 3, {"t": NOW})) + b"\x00"
    code = UART_AND_BLE + (
        "B.handler(1, (7, 0, b'a'))\nqueue(5)\nprint(LU.pump(), L.pump())\n"
        "ticks[0] = 1000\nprint(LU.pump(), L.pump())\n"     # the UART missed its ACK: BLE sends (4 a wake-up)
        f"ticks[0] = 1200\nU.rx.extend(binascii.unhexlify({ack3.hex()!r}))\nLU.poll()\n"
        "print(O.pending(), L.cur.last_send, L.cur.resend_in_ms(60000), LU.cur.resend_in_ms(60000))\n"
    )
    assert flash_run(code, tmp_path / "flash").stdout.splitlines() == ["5 0", "5 4", "[4, 5] 1000 800 800"]


def test_uart_byte_by_byte_and_overlong_garbage(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """Frames split across reads, an over-long chunk without delimiter, then a good ACK."""
    ack = cobs_ref(gw_frame(2, 1, {"t": NOW})) + b"\x00"
    code = UART + (
        "queue(1)\nL.pump()\n"
        "L.feed(b'\\x41' * 1100)\nL.feed(b'\\x42' * 100)\nprint(L.cobs_errors)\n"
        f"L.feed(b'\\x00')\nfor b in binascii.unhexlify({ack.hex()!r}):\n    L.feed(bytes((b,)))\n"
        "print(L.cobs_errors, O.pending(), sess.stats['acks'])\n"
    )
    assert flash_run(code, tmp_path / "flash").stdout.splitlines() == ["1", "1 [] 1"]


def test_ble_advertising_payloads_fit_31_bytes(mpy: Callable[..., Any]) -> None:
    code = (
        "from civic.uplink.ble import advertising_payloads\n"
        "for dev in ('a', 'x' * 29, 'y' * 30, 'z' * 32):\n"
        "    adv, resp = advertising_payloads(dev)\n"
        "    print(len(adv), len(resp), resp[1], resp[2:].decode())\n"
    )
    assert mpy(code).stdout.splitlines() == [
        "21 3 9 a", f"21 31 9 {'x' * 29}", f"21 31 8 {'y' * 29}", f"21 31 8 {'z' * 29}"]


def test_time_sync_only_from_a_fresh_plausible_ack(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    # An ACK's time is taken only when the ACK acknowledges a frame still in the outbox (the gateway
    # cannot have made it before that frame was sent) and lies in 2024..2099. A recorded ACK replayed
    # later acknowledges nothing new: it must not set the clock back (a bin would sleep for days).
    day = 86400
    recorded = gw_frame(2, 1, {"t": NOW - 3 * day})       # a genuine ACK of seq 1, recorded 3 days ago
    acks = [
        gw_frame(2, 1, {"t": NOW + 100}),                  # fresh: acknowledges 1 -> taken
        recorded,                                          # replayed: nothing new -> not taken
        gw_frame(2, 2, {"t": 0}),                          # fresh but implausible
        gw_frame(2, 3, {"t": -5}),
        gw_frame(2, 4, {"t": 2**40}),
        gw_frame(2, 5, {"t": 1704067200 - 1}),             # 2023: a clock that was never set
        gw_frame(2, 6, {"t": NOW + 200}),                  # fresh again -> taken
    ]
    code = COMMON + "queue(6)\n" + "".join(
        f"print(sess.handle(binascii.unhexlify({a.hex()!r})), synced, sess.stats['stale_time'])\n" for a in acks)
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == [
        f"ack [{NOW + 100}] 0",
        f"ack [{NOW + 100}] 1",
        f"ack [{NOW + 100}] 2",
        f"ack [{NOW + 100}] 3",
        f"ack [{NOW + 100}] 4",
        f"ack [{NOW + 100}] 5",
        f"ack [{NOW + 100}, {NOW + 200}] 5",
    ]


def test_an_ack_without_a_time_acknowledges_and_leaves_the_clock(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    # A gateway that distrusts its own clock (found ahead of its stored reports) sends ACKs without
    # "t" (docs/protocol.md §3): they acknowledge as usual and neither set the clock nor count as stale.
    acks = [gw_frame(2, 2, {}), gw_frame(2, 3, {"t": NOW + 100})]
    code = COMMON + "queue(3)\n" + "".join(
        f"print(sess.handle(binascii.unhexlify({a.hex()!r})), synced, sess.stats['stale_time'], len(O))\n"
        for a in acks)
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == ["ack [] 0 1", f"ack [{NOW + 100}] 0 0"]


def test_a_config_that_cannot_be_persisted_is_not_applied_and_the_link_goes_on(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    # Flash full while a CONFIG arrives: nothing is applied (not even in RAM, or the gateway's
    # retry would be "stale" and never applied), the UART link keeps running, and the retry works.
    c5 = cobs_ref(gw_frame(3, 5, {"courtesy_s": 30})) + b"\x00"
    code = UART + (
        "import civic.store.atomic as A\norig = A.write\n"
        "def full(path, data):\n    raise OSError(28)\n"
        f"A.write = full\nU.rx.extend(binascii.unhexlify({c5.hex()!r}))\nL.poll()\n"
        "print(sess.config['seq'], len(configs), sess.stats['errors'])\n"
        "A.write = orig\nqueue(1)\nprint(L.pump())\n"
        f"U.rx.extend(binascii.unhexlify({c5.hex()!r}))\nL.poll()\n"
        "print(sess.config['seq'], configs)\n"
    )
    assert flash_run(code, tmp_path / "flash").stdout.splitlines() == [
        "0 0 1", "1", "5 [{'courtesy_s': 30}]"]
