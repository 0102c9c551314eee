"""Two edge cases of a link's state, in MicroPython: a seq floor raised after the seq files were lost
is on flash at once (not only at the next reservation), and a MemoryError while a UART chunk is being
collected drops that chunk instead of gluing its part to the next one.

The UART double is the one of tests/firmware/test_uplink.py (hardware edge only); the session, outbox
and seq counter are the firmware's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from test_uplink import NOW, UART, gw_frame
from test_uplink_rx_bounds import SEQ_OUTBOX


def test_a_raised_seq_floor_survives_a_reboot_before_the_next_seq(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash_run(SEQ_OUTBOX + "for _ in range(6):\n    s = S.next()\n    O.append(s, b'frame %d' % s)\n", flash)
    (flash / "seq.bin").unlink()
    (flash / "seq.bin.bak").unlink()  # both copies lost; the outbox holds seqs 1..6
    # the floor is raised, then the board restarts before it sends anything
    out = flash_run(SEQ_OUTBOX + "S.at_least(O.pending()[-1])\nprint(S.last)\n", flash).stdout.splitlines()
    assert out == ["6"]
    assert (flash / "seq.bin").exists() and (flash / "seq.bin.bak").exists()
    # the outbox sent and acknowledged meanwhile (say): only the seq files remember the floor now
    flash_run(SEQ_OUTBOX + "O.ack(6)\nprint(O.pending())\n", flash)
    out = flash_run(SEQ_OUTBOX + "print(O.pending(), S.next())\n", flash).stdout.splitlines()
    assert out == ["[] 7"]


UART_SHORT_OF_HEAP = UART + """
from civic.wire import cobs
real_append = L._append
appends = []
def append_short_of_heap(part):
    appends.append(len(part))
    if len(appends) == 1:
        real_append(part[:len(part) // 2])   # half the chunk is in, then the heap runs out
        raise MemoryError('no heap for this one')
    real_append(part)
L._append = append_short_of_heap
def feed(hexes):
    try:
        L.feed(b''.join(cobs.encode(binascii.unhexlify(h)) + b'\\x00' for h in hexes))
    except MemoryError as exc:
        print('raised', exc)
    print('pending', O.pending())
"""


def test_a_uart_chunk_cut_short_by_a_memory_error_is_dropped_not_glued_to_the_next(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    acks = [gw_frame(2, s, {"t": NOW + s}).hex() for s in (1, 2, 3, 4)]
    code = UART_SHORT_OF_HEAP + (
        "queue(4)\nL.pump()\n"
        f"feed([{acks[0]!r}, {acks[1]!r}])\n"   # the first ACK is lost half-read; the second is handled (ACKs are cumulative)
        f"feed([{acks[2]!r}])\n"                # the next read is a clean frame
        "print('cobs', L.cobs_errors, sess.stats['bad'])\n"
    )
    lines = flash_run(code, tmp_path / "flash").stdout.splitlines()
    assert lines == ["raised no heap for this one", "pending [3, 4]", "pending [4]", "cobs 0 0"]
