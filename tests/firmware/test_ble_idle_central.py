"""A central that connects and does nothing must not hold the board's one BLE connection for ever.

The firmware's ``BleLink`` (MicroPython, the real session, outbox and seq counter) disconnects a
central that wrote no fresh frame verifying under the device key (an ACK that is no replay, a CONFIG
that was applied) within ``HANDSHAKE_MS`` (30 s) of the first frame notified to it, and advertises
again; a gateway whose ACK verified is never cut, however long the link stays idle afterwards, nor
is one waiting while the board has nothing to send. The tick source wraps like the device's
(``time.ticks_add``), so a timer that compared ticks without ``time.ticks_diff`` fails here.
Replayed ACKs: tests/firmware/test_ble_idle_central_replay.py. The BLE object is the hardware-edge double of
tests/firmware/test_uplink.py; tests/firmware/test_ble_idle_central_radio.py runs the same on the
virtual radio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from test_uplink import BLE, BLE_LINK_LINE, NOW, STACK_BLE, gw_frame

# the link under test reads the wrapping tick ``tk()``; the session keeps the shared fake ticks
BLE_TIMED = BLE.replace(BLE_LINK_LINE, "import time" + STACK_BLE + """B = StackBle()
base = [0]
def tk():
    return time.ticks_add(base[0], ticks[0])
L = blemod.BleLink(B, FakeUUID, sess, ticks_ms=tk)
def frags(raw, msg, conn):
    for i in range(0, len(raw), 18):
        B.write(conn, 12, bytes((msg, (i // 18) | (0x80 if i + 18 >= len(raw) else 0))) + raw[i:i + 18])
def at(ms):
    ticks[0] = ms
    L.poll()
    return (L.conn, L.idle_cut, list(B.disconnects), len(B.adv))
""", 1)


def test_a_central_that_does_nothing_is_cut_after_the_timeout_and_the_board_advertises_again(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    code = BLE_TIMED + (
        "print(blemod.HANDSHAKE_MS, L.handshake_ms)\n"
        "queue(1)\nB.handler(1, (7, 0, b'a'))\nprint(L.pump())\n"            # connects at tick 0, is sent seq 1
        "L.cur.wait_ms = 600000\n"                                         # no re-send in the way of _wait_ms
        "print(at(10000))\n"
        "print(L._wait_ms(0, False))\n"                                    # nothing to send: sleeps at most idle_ms
        "ticks[0] = 25000\nprint(L._wait_ms(0, False))\n"                  # ... but wakes for the deadline
        "print(at(29999))\n"                                               # still within its 30 s
        "print(at(30000))\n"                                               # cut: once
        "print(at(30500))\n"                                               # not cut again meanwhile
        "B.handler(2, (7, 0, b'a'))\n"                                     # the stack reports the disconnect
        "print(L.conn, len(B.adv), B.adv[-1] == B.adv[0], L._wait_ms(0, False))\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == [
        "30000 30000",
        "1",
        "(7, 0, [], 1)",
        "10000",
        "5000",
        "(7, 0, [], 1)",
        "(7, 1, [7], 1)",
        "(7, 1, [7], 1)",
        "None 2 True 10000",  # advertising again with the same payloads; idle until the next connect
    ]


def test_the_timer_starts_with_the_first_frame_notified_not_at_the_connect(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    # A gateway may wait for a board with nothing to send (it drops the link itself after its
    # auth_timeout_s); a squatter then holds nothing anyone could collect. Once a frame is due, the
    # central has HANDSHAKE_MS to answer it.
    code = BLE_TIMED + (
        "B.handler(1, (7, 0, b'a'))\nprint(L.pump())\n"                      # nothing to send
        "print(at(30000), at(100000), L._wait_ms(0, False))\n"
        "ticks[0] = 100000\nqueue(1)\nprint(L.pump())\n"                     # a report: notified now
        "print(at(129999), at(130000))\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == ["0", "(7, 0, [], 1) (7, 0, [], 1) 10000", "1", "(7, 0, [], 1) (7, 1, [7], 1)"]


def test_junk_writes_and_frames_that_do_not_verify_do_not_count_as_the_first_step(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    wrong_key = gw_frame(2, 1, {"t": NOW}, key=bytes(32))
    other_dev = gw_frame(2, 1, {"t": NOW}, dev="sl-8")
    code = BLE_TIMED + (
        "queue(1)\nB.handler(1, (7, 0, b'a'))\nL.pump()\n"
        "B.write(7, 12, b'\\x00\\x00junk')\n"
        f"frags(binascii.unhexlify({wrong_key.hex()!r}), 1, 7)\n"
        f"frags(binascii.unhexlify({other_dev.hex()!r}), 2, 7)\n"
        "B.write(9, 12, b'\\x00\\x80x')\n"                                 # another connection's write
        "print(at(29999), sess.stats['bad'])\n"
        "print(at(30000), L.kicked, O.pending())\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == ["(7, 0, [], 1) 2", "(7, 1, [7], 1) 0 [1]"]


def test_a_gateway_whose_ack_verified_is_never_cut_however_long_it_stays_idle(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    ack = gw_frame(2, 2, {"t": NOW + 5})
    code = BLE_TIMED + (
        "queue(2)\nB.handler(1, (7, 0, b'a'))\nB.handler(21, (7, 247))\nprint(L.pump())\n"
        "ticks[0] = 5000\n"
        f"frags(binascii.unhexlify({ack.hex()!r}), 3, 7)\n"
        "print(at(5000), O.pending())\n"
        "cuts = set()\n"
        "for t in range(10000, 24 * 3600 * 1000, 7000):\n"               # a day with nothing to send
        "    r = at(t)\n    cuts.add((r[0], r[1], len(r[2])))\n"
        "print(sorted(cuts), L._wait_ms(0, False))\n"
        "queue(1)\nprint(L.pump())\n"                                      # and it still carries the next report
        # the next central starts afresh: a link verified before does not exempt it
        "B.handler(2, (7, 0, b'a'))\nticks[0] = 90000000\nB.handler(1, (8, 0, b'b'))\nprint(L.pump())\n"
        "print(at(90029999), at(90030000))\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == [
        "2",
        "(7, 0, [], 1) []",
        "[(7, 0, 0)] 10000",
        "1",
        "1",
        "(8, 0, [], 2) (8, 1, [8], 2)",
    ]


def test_an_applied_config_is_a_first_step_a_stale_one_is_not(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    # A CONFIG newer than the applied one is fresh: only the gateway (the key's holder) can have
    # made it now. The same frame again is stale: it verifies, but anyone who recorded it can
    # replay it, so it no longer counts as an answer (it did before the replay fix).
    config = gw_frame(3, 4, {"courtesy_s": 45})
    code = BLE_TIMED + (
        "queue(1)\nB.handler(1, (7, 0, b'a'))\nL.pump()\n"
        f"frags(binascii.unhexlify({config.hex()!r}), 1, 7)\n"
        "print(at(20000), configs, L.proven)\n"
        "print(at(60000), at(600000))\n"                                 # applied: never cut
        # the next central writes that CONFIG again (stale) and then idles: cut 30 s on
        "B.handler(2, (7, 0, b'a'))\nticks[0] = 700000\nB.handler(1, (8, 0, b'b'))\nprint(L.pump())\n"
        f"frags(binascii.unhexlify({config.hex()!r}), 2, 8)\n"
        "print(at(700000), L.proven, L._unverified, len(configs), sess.stats['bad'])\n"
        "print(at(729999), at(730000))\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == [
        "(7, 0, [], 1) [{'courtesy_s': 45}] True",
        "(7, 0, [], 1) (7, 0, [], 1)",
        "1",
        "(8, 0, [], 2) False 0 1 0",   # verified (not bad, flood count reset), not applied again
        "(8, 0, [], 2) (8, 1, [8], 2)",
    ]


def test_the_timeout_is_right_across_the_tick_counter_wrap(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    # connected 10 s before the counter wraps (2**30 ms on the device): a plain subtraction would
    # see a huge negative age and never cut, or cut at once the other way round
    code = BLE_TIMED + (
        "period = time.ticks_add(0, -1) + 1\n"
        "base[0] = period - 10000\n"
        "queue(1)\nB.handler(1, (7, 0, b'a'))\nL.pump()\n"
        "print(period == 2 ** 30, L._since, tk() < L._since)\n"
        "print(at(9999), tk() < L._since)\n"                              # just before the wrap
        "print(at(20000), tk() < L._since)\n"                             # wrapped: 20 s in
        "print(at(29999), at(30000))\n"
        # the cut re-arms: a disconnect event that never comes is asked for again 30 s later, also
        # across the wrap
        "print(at(59999), at(60000))\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == [
        f"True {2 ** 30 - 10000} False",
        "(7, 0, [], 1) False",
        "(7, 0, [], 1) True",
        "(7, 0, [], 1) (7, 1, [7], 1)",
        "(7, 1, [7], 1) (7, 2, [7, 7], 1)",
    ]


def test_the_link_task_wakes_by_itself_to_cut_an_idle_central(mpy: Callable[..., Any]) -> None:
    # run() with idle_ms (600 s) far longer than the timeout (0.3 s): the sleep is cut short to the
    # deadline, so the task acts although no BLE event or frame wakes it (the interpreter's own
    # event loop and clock). The cut's time is taken on the link's own clock, so a loaded machine
    # can make it late but not early.
    code = "import os\nos.mkdir('/flash')\n" + BLE_TIMED.replace(
        "sess, ticks_ms=tk)", "sess, ticks_ms=tk, idle_ms=600000, handshake_ms=300)") + (
        "import asyncio\n"
        "t0 = time.ticks_ms()\n"
        "def real():\n    return time.ticks_diff(time.ticks_ms(), t0)\n"
        "L.ticks_ms = real\n"
        "cut_at = []\n"
        "plain = B.gap_disconnect\n"
        "def timed(conn):\n    cut_at.append(real())\n    return plain(conn)\n"
        "B.gap_disconnect = timed\n"
        "queue(1)\nB.handler(1, (7, 0, b'a'))\n"
        "async def main():\n"
        "    task = asyncio.create_task(L.run())\n"
        "    for _ in range(200):\n"                                      # up to ~10 s of real time
        "        await asyncio.sleep_ms(50)\n"
        "        if B.disconnects:\n"
        "            break\n"
        "    L.stop()\n"
        "    await task\n"
        "    print(B.disconnects, L.idle_cut, [t >= 300 for t in cut_at])\n"
        "asyncio.create_task(main())\n"
    )
    lines = mpy(code).stdout.splitlines()
    assert lines == ["[7] 1 [True]"]
