"""A recorded ACK replayed by a squatter must not stop the BLE idle-central cut (review: MEDIUM).

Anyone in radio range can record a gateway's ACK; it verifies under the device key for ever. Before
the fix, any verified frame stopped the timer for the whole connection, so a squatter writing one
sniffed ACK held the board's only connection while its reports piled up in the outbox. Now only a
fresh ACK counts: one that removed an outbox entry, or that covers a frame notified on this
connection (a frame another link's ACK removed first). The harness is that of
tests/firmware/test_ble_idle_central.py (the real session, outbox and seq counter in MicroPython).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from test_ble_idle_central import BLE_TIMED
from test_uplink import NOW, gw_frame

# a gateway ACKs seq 2 (frames 1 and 2 pending) and disconnects; report 3 is stored; a squatter
# connects at 100 s and is notified report 3
GATEWAY_THEN_SQUATTER = (
    "queue(2)\nB.handler(1, (7, 0, b'a'))\nB.handler(21, (7, 247))\nL.pump()\n"
    "ticks[0] = 5000\n"
    "frags(binascii.unhexlify(ACK2), 3, 7)\n"
    "print('gw', at(5000), O.pending(), L.proven)\n"
    "B.handler(2, (7, 0, b'a'))\n"
    "queue(1)\nticks[0] = 100000\nB.handler(1, (9, 0, b'z'))\nprint('sent', L.pump())\n"
)


def test_a_replayed_ack_does_not_stop_the_cut(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    ack2 = gw_frame(2, 2, {"t": NOW + 5})
    code = BLE_TIMED + f"ACK2 = {ack2.hex()!r}\n" + GATEWAY_THEN_SQUATTER + (
        "frags(binascii.unhexlify(ACK2), 4, 9)\n"                          # the recorded ACK, replayed
        "print('sq', at(100000), O.pending(), sess.stats['acks'], sess.stats['bad'], L.proven, L._unverified)\n"
        "print('sq', at(129999), at(130000), L.kicked)\n"
        "B.handler(2, (9, 0, b'z'))\n"
        "print('adv', L.conn, len(B.adv), O.pending())\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == [
        "gw (7, 0, [], 1) [] True",
        "sent 1",
        # verified (counted as an ACK, not bad; the flood count is reset) but not fresh
        "sq (9, 0, [], 2) [3] 2 0 False 0",
        "sq (9, 0, [], 2) (9, 1, [9], 2) 0",
        "adv None 3 [3]",                                                 # advertising again, report kept
    ]


def test_replaying_the_ack_again_and_again_does_not_stop_it_either(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    # one replay every 10 s: the timer runs from the first notified frame regardless
    ack2 = gw_frame(2, 2, {"t": NOW + 5})
    code = BLE_TIMED + f"ACK2 = {ack2.hex()!r}\n" + GATEWAY_THEN_SQUATTER + (
        "for i, t in enumerate((100000, 110000, 120000, 129999)):\n"
        "    ticks[0] = t\n    frags(binascii.unhexlify(ACK2), 10 + i, 9)\n    print(at(t))\n"
        "print(at(130000), sess.stats['acks'])\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines[2:] == ["(9, 0, [], 2)"] * 4 + ["(9, 1, [9], 2) 5"]


def test_the_real_gateways_ack_of_the_notified_report_stops_it(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    # the same squatter scene, but a gateway: it answers report 3 with ACK 3, which removes it
    ack2 = gw_frame(2, 2, {"t": NOW + 5})
    ack3 = gw_frame(2, 3, {"t": NOW + 100})
    code = BLE_TIMED + f"ACK2 = {ack2.hex()!r}\n" + GATEWAY_THEN_SQUATTER + (
        "ticks[0] = 101000\n"
        f"frags(binascii.unhexlify({ack3.hex()!r}), 4, 9)\n"
        "print(at(101000), O.pending(), L.proven, L.cur.answered)\n"
        "print(at(131000), at(3600000))\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines[2:] == ["(9, 0, [], 2) [] True True", "(9, 0, [], 2) (9, 0, [], 2)"]


def test_an_ack_of_a_notified_frame_that_another_link_acked_first_still_counts(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    # A streetlight sends on UART and BLE: a slow UART may deliver report 3 to its gateway while BLE
    # also notifies it; the UART's ACK removes it, so the BLE gateway's ACK 3 removes nothing. It
    # covers a frame notified on this connection, so it is no replay and the gateway is not cut.
    # A replayed older ACK arriving the same way (nothing removed, below that frame) still is.
    ack2 = gw_frame(2, 2, {"t": NOW + 5})
    ack3 = gw_frame(2, 3, {"t": NOW + 100})
    code = BLE_TIMED + f"ACK2 = {ack2.hex()!r}\nACK3 = {ack3.hex()!r}\n" + GATEWAY_THEN_SQUATTER + (
        "U = sess.cursor()\n"                                              # the other link's cursor
        "print(sess.handle(binascii.unhexlify(ACK3), U), O.pending(), L.cur.answered)\n"
        "frags(binascii.unhexlify(ACK2), 4, 9)\n"
        "print(at(100000), L.proven)\n"
        "frags(binascii.unhexlify(ACK3), 5, 9)\n"
        "print(at(100000), L.proven, sess.stats['acks'])\n"
        "print(at(130000), at(3600000))\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines[2:] == [
        "ack [] False",                     # another link's ACK does not answer for this one
        "(9, 0, [], 2) False",              # the old ACK: not fresh
        "(9, 0, [], 2) True 4",             # ACK 3: covers report 3, notified on this connection
        "(9, 0, [], 2) (9, 0, [], 2)",
    ]
