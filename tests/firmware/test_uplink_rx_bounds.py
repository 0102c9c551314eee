"""What a link's received bytes may cost, in MicroPython: BLE writes from any central (no pairing)
hold a bounded heap and a central writing only junk is disconnected; a UART session handler that
raises does not corrupt the next frame; the seq counter resumes above the outbox's seqs.

The BLE and UART objects are the test doubles of tests/firmware/test_uplink.py (hardware edge only);
the session, outbox and seq counter are the firmware's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from test_uplink import BLE, BLE_LINK_LINE, NOW, STACK_BLE, UART, gw_frame

from gateway.resources import firmware_dir
from hil.sim.mprun import run_micropython

# the stack hands out a fresh bytes object per gatts_read (test_uplink.STACK_BLE)
BLE_COPYING = BLE.replace(BLE_LINK_LINE, "import gc" + STACK_BLE + """B = StackBle()
L = blemod.BleLink(B, FakeUUID, sess)
def junk(conn, n, size=507):
    for i in range(n):
        B.write(conn, 12, bytes((i & 0xFF, 0)) + bytes(size))  # first fragments that never complete
def ack_frags(raw, msg):
    for i in range(0, len(raw), 18):
        B.write(B.conn_now, 12, bytes((msg, (i // 18) | (0x80 if i + 18 >= len(raw) else 0))) + raw[i:i + 18])
""", 1)


def test_a_flood_of_ble_writes_holds_a_bounded_heap_and_the_central_is_dropped() -> None:
    # The wasm port collects garbage only between top-level calls: steps, each ending with
    # gc.collect(), so a step starts on a heap of live objects only (bench/firmware_memory.py).
    ack = gw_frame(2, 2, {"t": NOW + 5})
    code = "import os\nos.mkdir('/flash')\n" + BLE_COPYING + (
        "queue(2)\nB.handler(1, (7, 0, b'a'))\nB.conn_now = 7\n"
        "step = [0]\nbase = [0]\n"
        "def mprun_step():\n"
        "    step[0] += 1\n"
        "    if step[0] == 1:\n"
        "        base[0] = gc.mem_alloc()\n"
        "        junk(7, 300)\n"                           # 150 KB written before the link task runs
        "    elif step[0] == 2:\n"
        "        print('held', gc.mem_alloc() - base[0], L.rx_dropped > 250)\n"
        "        return None\n"
        "    gc.collect()\n"
        "    return True\n"
    )
    rest = (
        "L.poll()\n"
        "print('kicked', L.kicked, B.disconnects, L.conn)\n"
        "B.handler(2, (7, 0, b'a'))\n"                    # the stack reports the disconnect
        "print('after', L.conn, len(B.adv), len(L._rx_queue))\n"
        # the gateway connects next; a second central's writes meanwhile are ignored
        "B.handler(1, (8, 0, b'g'))\nB.conn_now = 8\njunk(9, 40)\n"
        "print('other', len(L._rx_queue), L.kicked)\n"
        "print('sent', L.pump())\n"
        f"ack_frags(binascii.unhexlify({ack.hex()!r}), 3)\nL.poll()\n"
        "print('acked', O.pending(), synced)\n"
        "queue(1)\nprint('sent again', L.pump())\n"       # the board goes on reporting over BLE
    )
    code = code.replace("        return None\n", "".join("        " + line + "\n" for line in rest.splitlines())
                        + "        return None\n", 1)
    lines = run_micropython(code, libs=[firmware_dir() / "lib"], steps=True).stdout.splitlines()
    held = lines[0].split()
    # two frames' worth queued (2 KB) plus list and object overheads; was 64 writes of 509 B (~33 KB)
    assert held[0] == "held" and int(held[1]) < 4096, lines[0]
    assert held[2] == "True"
    assert lines[1:] == ["kicked 1 [7] 7", "after None 2 0", "other 0 1", "sent 2",
                         f"acked [] [{NOW + 5}]", "sent again 1"]


def test_a_gateway_whose_frames_verify_is_not_dropped_for_junk_between_them(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    acks = [gw_frame(2, s, {"t": NOW + s}) for s in (1, 2)]
    code = BLE_COPYING + (
        "queue(2)\nB.handler(1, (7, 0, b'a'))\nB.conn_now = 7\nL.pump()\n"
        "for _ in range(6):\n    junk(7, 1, 498)\n    L.poll()\n"      # 3000 B: under the limit
        f"ack_frags(binascii.unhexlify({acks[0].hex()!r}), 1)\nL.poll()\n"
        "for _ in range(6):\n    junk(7, 1, 498)\n    L.poll()\n"      # counted afresh after the ACK
        "print(L.kicked, B.disconnects, O.pending())\n"
        "for _ in range(3):\n    junk(7, 1, 498)\n    L.poll()\n"      # 4500 B with no verified frame
        "print(L.kicked, B.disconnects)\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == ["0 [] [2]", "1 [7]"]


UART_FLAKY = UART + """
from civic.wire import cobs
real_handle = sess.handle
calls = []
def flaky(data, cur=None):
    calls.append(1)
    if len(calls) in (1, 3):
        raise MemoryError('no heap for this one')
    return real_handle(data, cur)
sess.handle = flaky
def feed(hexes):
    try:
        L.feed(b''.join(cobs.encode(binascii.unhexlify(h)) + b'\\x00' for h in hexes))
    except MemoryError as exc:
        print('raised', exc)
    print('pending', O.pending())
"""


def test_a_uart_frame_after_a_handler_that_raised_is_not_corrupted(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    acks = [gw_frame(2, s, {"t": NOW + s}).hex() for s in (1, 2, 3, 4)]
    code = UART_FLAKY + (
        "queue(4)\nL.pump()\n"
        f"feed([{acks[0]!r}])\n"                 # the handler raises: that ACK is lost
        f"feed([{acks[1]!r}])\n"                 # the next read is a clean frame
        f"feed([{acks[2]!r}, {acks[3]!r}])\n"    # raises on the first of one read; the second is handled
        "print('cobs', L.cobs_errors, sess.stats['bad'])\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == ["raised no heap for this one", "pending [1, 2, 3, 4]", "pending [3, 4]",
                     "raised no heap for this one", "pending []", "cobs 0 0"]


SEQ_OUTBOX = """
from civic.store.seq import SeqCounter
from civic.store.outbox import Outbox
S = SeqCounter('/flash/seq.bin', block=4)
O = Outbox('/flash/outbox')
"""


def test_the_seq_counter_resumes_above_the_outbox_when_its_files_are_gone(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash_run(SEQ_OUTBOX + "for _ in range(6):\n    s = S.next()\n    O.append(s, b'frame %d' % s)\nO.ack(2)\n", flash)
    (flash / "seq.bin").unlink()
    (flash / "seq.bin.bak").unlink()  # both copies lost; the outbox holds seqs 3..6
    code = SEQ_OUTBOX + (
        "print(S.last)\nS.at_least(O.pending()[-1])\nS.at_least(2)\n"   # a lower floor changes nothing
        "s = S.next()\nO.append(s, b'frame %d' % s)\nprint(s, S.last, O.pending())\n"
    )
    assert flash_run(code, flash).stdout.splitlines() == ["0", "7 7 [3, 4, 5, 6, 7]"]
    assert (flash / "seq.bin").exists() and (flash / "seq.bin.bak").exists()
    # rebooted with the files back: counting goes on above the new reservation, not from the outbox
    out = flash_run(SEQ_OUTBOX + "print(S.next() > 7)\n", flash).stdout.splitlines()
    assert out == ["True"]


def test_the_seq_floor_must_be_a_u32(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    code = SEQ_OUTBOX + (
        "for bad in (-1, 2 ** 32, '5', None):\n"
        "    try:\n        S.at_least(bad)\n        print('took', bad)\n"
        "    except ValueError as exc:\n        print(exc)\n"
        "print(S.next())\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == ["seq: floor -1 is not a u32", "seq: floor 4294967296 is not a u32",
                     "seq: floor '5' is not a u32", "seq: floor None is not a u32", "1"]
