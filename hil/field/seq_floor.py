"""Start a board's report seqs above those the gateway stored under its id.

The gateway de-duplicates by ``(device, seq)``: a board whose seq counter starts again (a new board taking
over a dead one's id, a board whose flash was erased) sends reports under stored seqs, which the gateway
refuses (``seq_reused``, another frame digest) and which are lost: never acknowledged, the board drops them
at its outbox cap or with the next ACK past them. Provisioning raises the board's reservation
(``/seq.bin`` and ``/seq.bin.bak``, firmware ``civic.store.seq``: the highest reserved seq, 4 bytes
big-endian, written with ``civic.store.atomic``) to at least the id's highest seq stored or acknowledged
(its ACK floor), so its next report is new to the gateway. A board's counter is never moved down.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hil.dut import Dut
from hil.errors import HilError
from hil.field.errors import DeviceIOError, FieldError
from gateway.errors import StorageError
from gateway.storage.queries import highest_committed_seq
from gateway.storage.sqlite_uri import read_only_uri

SEQ_PATH = "/seq.bin"
OUTBOX_DIR = "/outbox"
MAX_SEQ = 0xFFFFFFFF

# Runs on the board: the reservation as the firmware reads it (the larger readable copy, 0 when there
# is none; -1 when a copy exists and none is readable: the firmware refuses to start then), raised in
# both copies to {floor} or the highest seq in the outbox (framed, maybe never sent), when below it.
# Unreadable copies are written afresh with that (even 0: the floor is the gateway's knowledge, or the
# technician's --seq-start, so no seq it stored is below it). Prints (before, after); after is before
# when nothing was written.
_RAISE_CODE = """\
import os, struct, sys
if '/lib' not in sys.path:
    sys.path.append('/lib')
from civic.store import atomic
_civic_floor = {floor}
try:
    for _civic_n in os.listdir({outbox!r}):
        if _civic_n[-2:] in ('.r', '.a'):
            _civic_floor = max(_civic_floor, int(_civic_n[:-2], 16))
except (OSError, ValueError):
    pass
_civic_found = []
_civic_bad = False
for _civic_p in ({path!r}, {path!r} + '.bak'):
    try:
        _civic_raw = atomic.read(_civic_p)
    except ValueError:
        _civic_bad = True
        continue
    if _civic_raw is not None:
        if len(_civic_raw) == 4:
            _civic_found.append(struct.unpack('>I', _civic_raw)[0])
        else:
            _civic_bad = True
_civic_before = max(_civic_found) if _civic_found else (-1 if _civic_bad else 0)
_civic_after = max(_civic_before, _civic_floor)
if _civic_after > _civic_before and (_civic_after > 0 or _civic_before < 0):
    for _civic_p in ({path!r}, {path!r} + '.bak'):
        atomic.write(_civic_p, struct.pack('>I', _civic_after))
else:
    _civic_after = _civic_before
print(repr((_civic_before, _civic_after)))
"""


def highest_stored_seq(db_path: Path, device_id: str) -> int:
    """The highest seq the gateway store at ``db_path`` holds for ``device_id`` (stored, recorded as a
    window duplicate, or removed by report retention), 0 when none. Opened read-only.

    Raises:
        FieldError: the store cannot be opened or read (not a civicedge store, damaged, locked).
    """
    if not db_path.is_file():
        raise FieldError(f"the gateway store {db_path} does not exist (the gateway's [storage] path, "
                         "<data_dir>/reports.sqlite by default)", db=str(db_path))
    try:
        conn = sqlite3.connect(read_only_uri(db_path), uri=True, timeout=5)
        try:
            # The gateway's own reading (its admin API answers the same for --gateway).
            return highest_committed_seq(conn, device_id)
        finally:
            conn.close()
    except StorageError as exc:  # not_a_store
        raise FieldError(f"{db_path} is not a civicedge gateway store (no reports table)", db=str(db_path)) from exc
    except sqlite3.Error as exc:
        raise FieldError(f"cannot read the gateway store {db_path}: {exc}", db=str(db_path)) from exc


def raise_board_seq(dut: Dut, floor: int) -> tuple[int, int]:
    """Make the board's next report seq at least ``floor + 1``; never lower its counter.

    Args:
        dut: an open board at its REPL (firmware stopped).
        floor: the highest seq the gateway stored under the id, or acknowledged to it (0: none; the
            seq files are still repaired).

    Returns:
        (reservation before, reservation after), equal when nothing was written. Before is -1 when the
        board's seq files are unreadable (the firmware refuses to start with them, CorruptFile): both are
        written afresh with ``floor`` or the highest seq in the outbox, whichever is larger.

    Raises:
        FieldError: ``floor`` leaves no seq for the board (:func:`check_seq_floor`), or the board's seq
            files are unreadable and were not written (the board answered so).
        DeviceIOError: the board could not be read or written.
    """
    check_seq_floor(floor)
    try:
        got = dut.eval_code(_RAISE_CODE.format(path=SEQ_PATH, outbox=OUTBOX_DIR, floor=int(floor)), timeout_s=15)
    except HilError as exc:
        raise DeviceIOError(f"cannot read or raise the report seq counter ({SEQ_PATH}) on {dut.url}: {exc}; retry",
                            port=dut.url) from exc
    if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(n, int) for n in got)):
        raise DeviceIOError(f"the board on {dut.url} answered {got!r} for its seq counter; retry", port=dut.url)
    before, after = int(got[0]), int(got[1])
    if after < 0:
        raise FieldError(f"the board on {dut.url} has damaged report seq files ({SEQ_PATH}, {SEQ_PATH}.bak) and no "
                         "seq was written: its firmware refuses to start with them; pass --seq-start N (above the "
                         "highest seq the gateway stored under the id: --db/--gateway read it)", port=dut.url)
    return before, after


# Past this, provision warns: half the u32 seq space of the id is used.
SEQ_WARN_ABOVE = 2 ** 31


def check_seq_floor(floor: int) -> None:
    """Refuse a seq floor that leaves the board no seq: the u32 seq space of the id is used up.

    Raises:
        FieldError: reason ``seq_space_used_up`` when ``floor`` is at or above :data:`MAX_SEQ` (the
            firmware would stop at its first report, SeqExhausted); ``bad_seq_floor`` when negative.
    """
    if floor < 0:
        raise FieldError(f"seq floor {floor} is negative", reason="bad_seq_floor")
    if floor >= MAX_SEQ:
        raise FieldError(f"the seq space of this id is used up (the gateway holds seq {floor}, the last one is "
                         f"{MAX_SEQ}): provision the board under a new id", reason="seq_space_used_up", floor=floor)
