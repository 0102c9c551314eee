"""provision starts a board's report seqs above those the gateway stored under the id it takes: a new
board taking over a dead board's id (seq file absent: its counter starts at 1) would otherwise send
reports under stored seqs, which the gateway refuses (``seq_reused``). The board's counter is never
lowered. Through the real simulator and the real firmware seq counter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from field_cli import civicedge

from gateway.registry import Registry
from gateway.storage import ReportRecord, ReportStore
from hil.field.device import open_board
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

_NEXT_SEQ = "from civic.store.seq import SeqCounter\nprint(repr(SeqCounter('/seq.bin').next()))"


def _stored(db: Path, device: str, seqs: range) -> None:
    """The dead board's reports in the gateway store."""
    store = ReportStore(db, gateway_id="gw")
    try:
        store.insert_batch([ReportRecord(device=device, seq=s, kind="streetlight", zone="centre", type="win",
                                         w=1_790_000_100 + 900 * s, l=900, m={"lux": 1, "lvl": 60, "lamp": 0}, e={},
                                         a=[], fw="0.1.0", received_at=1_790_000_100.0 + 900 * s,
                                         link="serial:/dev/x", digest="%064x" % s) for s in seqs])
    finally:
        store.close()


def _registered_elsewhere(registry: Path, device: str) -> None:
    """``device`` registered with a key no board here holds (the dead board's)."""
    reg = Registry(registry)
    try:
        reg.enroll(device, kind="streetlight", zone="centre", lat="52.37", lon="4.89", key=bytes(range(32)),
                   replace=True)
    finally:
        reg.close()


async def test_provision_starts_the_seqs_above_the_stored_ones_and_never_lowers_them(
        tmp_path: Path, sim_available: None) -> None:
    data = tmp_path / "data"
    registry = data / "registry"
    _registered_elsewhere(registry, "sl-0031")
    _stored(data / "reports.sqlite", "sl-0031", range(1, 41))
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", speed=10)
    await board.start()
    try:
        port = board.console_path
        await board.wait_console("not provisioned", timeout_s=60)  # booted: the port is free

        async def provision(device_id: str, where: Path, *extra: str) -> tuple[int, str]:
            rc, out = await civicedge("provision", "--port", port, "--id", device_id, "--zone", "centre",
                                      "--location", "52.37,4.89", "--registry", str(where), "--board",
                                      "streetlight-esp32", "--stay-at-repl", *extra)
            return rc, " ".join(out.split())

        def next_seq() -> int:
            dut = open_board(port, timeout_s=10)
            try:
                return int(dut.eval_code(_NEXT_SEQ))
            finally:
                dut.close()

        # A new board (no seq file) takes over sl-0031: the store beside the registry says 40.
        rc, out = await provision("sl-0031", registry, "--force", "--take-over")
        assert rc == 0, out
        assert "report seqs: start above 40" in out and "counter was at 0" in out, out
        assert await asyncio.to_thread(next_seq) == 41  # the firmware's own counter: new to the gateway

        # Its counter is ahead now (41 used, a block reserved): a lower floor never moves it down, and an
        # unchanged identity keeps its key (no --force).
        rc, out = await provision("sl-0031", registry, "--seq-start", "10")
        assert rc == 0 and "already on the board (unchanged)" in out, out
        assert "report seqs" not in out, out  # nothing raised
        # A counter resumes above its reservation: the block reserved with 41 (41..72) stays skipped.
        assert await asyncio.to_thread(next_seq) == 73

        # Without a store at hand, taking over a registered id warns and names the option ...
        bare = tmp_path / "bare" / "registry"
        _registered_elsewhere(bare, "sl-0099")
        rc, out = await provision("sl-0099", bare, "--force", "--take-over")
        assert rc == 0, out
        assert "highest report seq the gateway stored under it is not known here" in out, out
        assert "--seq-start N" in out and "seq_reused" in out, out
        # the command to re-run keeps the key: without --force --take-over (the board's outbox then holds the
        # reports the gateway refused, and re-keying would stop at them: UnsentReportsError)
        assert (f"the floor: civicedge provision --port {port} --id sl-0099 --zone centre --location 52.37,4.89 "
                f"--board streetlight-esp32 --registry {bare} --seq-start N (its own") in out, out
        # ... which the technician then gives (the gateway's warning names N): the key stays.
        rc, out = await provision("sl-0099", bare, "--seq-start", "5000")
        assert rc == 0 and "already on the board (unchanged)" in out and "start above 4999" in out, out
        assert await asyncio.to_thread(next_seq) == 5000
    finally:
        await board.stop()


def test_seq_start_and_db_are_checked_before_the_board(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hil.cli.main import main as civicedge_main

    base = ["provision", "--port", "/dev/ttyUSB-missing", "--id", "sl-1", "--zone", "centre", "--location",
            "52.1,4.2", "--registry", str(tmp_path)]
    for bad in ("0", "x", "4294967296"):
        with pytest.raises(SystemExit) as exited:
            civicedge_main([*base, "--seq-start", bad])
        assert exited.value.code == 2 and "--seq-start" in capsys.readouterr().err


def test_highest_stored_seq_counts_window_duplicates_and_removed_rows(tmp_path: Path) -> None:
    """Every seq the gateway holds as committed counts: stored rows, releases recorded as window
    duplicates (no row), and rows report retention removed (only their highest seq is kept)."""
    import sqlite3

    from hil.field.errors import FieldError
    from hil.field.seq_floor import highest_stored_seq

    db = tmp_path / "reports.sqlite"
    _stored(db, "sl-1", range(1, 4))
    _stored(db, "sl-2", range(1, 90))
    assert highest_stored_seq(db, "sl-1") == 3 and highest_stored_seq(db, "sl-9") == 0
    conn = sqlite3.connect(db)
    try:
        conn.execute("INSERT INTO retired_seqs (device, seq) VALUES ('sl-1', 120)")
        conn.commit()
    finally:
        conn.close()
    assert highest_stored_seq(db, "sl-1") == 120 and highest_stored_seq(db, "sl-2") == 89
    # seq 5 releases mot for the period seq 1 released (its clock was set back): a window duplicate
    store = ReportStore(db, gateway_id="gw")
    try:
        release = ReportRecord(device="sl-3", seq=1, kind="streetlight", zone="centre", type="win", w=1_789_992_000,
                               l=21600, m={"mot": 7}, e={"mot": 500}, a=[], fw="0.1.0", received_at=1_790_020_000.0,
                               link="serial:/dev/x", digest="%064x" % 1)
        result = store.insert_batch([release, release._replace(seq=5, digest="%064x" % 5)])
        assert [d.seq for d in result.window_duplicates] == [5]
    finally:
        store.close()
    assert highest_stored_seq(db, "sl-3") == 5
    # refused reports (and gaps given up on) moved sl-2's ACK floor past its stored seqs: a board counting
    # at or below it would ignore every ACK
    store = ReportStore(db, gateway_id="gw")
    try:
        store.save_floors({"sl-2": 95})
    finally:
        store.close()
    assert highest_stored_seq(db, "sl-2") == 95
    with pytest.raises(FieldError, match="does not exist"):
        highest_stored_seq(tmp_path / "nope.sqlite", "sl-1")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).close()
    with pytest.raises(FieldError, match="not a civicedge gateway store"):
        highest_stored_seq(other, "sl-1")


_READ_SEQ_FILES = """\
import sys
if '/lib' not in sys.path:
    sys.path.append('/lib')
import struct
from civic.store import atomic
print(repr(tuple(struct.unpack('>I', atomic.read(p))[0] for p in ('/seq.bin', '/seq.bin.bak'))))"""

_DAMAGE_SEQ_FILES = """\
for _p in ('/seq.bin', '/seq.bin.bak'):
    with open(_p, 'wb') as _f:
        _f.write(b'garbage')
print(repr(1))"""

_FRAMED_IN_OUTBOX = """\
import os
try:
    os.mkdir('/outbox')
except OSError:
    pass
with open('/outbox/%08x.r' % 300, 'wb') as _f:
    _f.write(b'x')
print(repr(1))"""


async def test_raise_board_seq_on_the_firmware_counter(tmp_path: Path, sim_available: None) -> None:
    """raise_board_seq on a virtual board, read back by the firmware's own counter: both copies written
    (/seq.bin.bak too), damaged copies with a known floor of 0 written afresh (was: nothing written, the
    firmware still refused to start, and provision said 'start above 0'), the outbox's highest framed seq
    wins over a lower floor, and a floor at the top of the u32 seq space refused with a FieldError (was a
    ValueError traceback). Test fails before."""
    from hil.field.errors import FieldError
    from hil.field.seq_floor import MAX_SEQ, raise_board_seq

    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", speed=10)
    await board.start()
    try:
        await board.wait_console("not provisioned", timeout_s=60)

        def on_board() -> dict[str, object]:
            dut = open_board(board.console_path, timeout_s=10)
            try:
                got: dict[str, object] = {"fresh": raise_board_seq(dut, 40),
                                          "copies": dut.eval_code(_READ_SEQ_FILES)}
                dut.eval_code(_DAMAGE_SEQ_FILES)
                got["damaged"] = raise_board_seq(dut, 0)
                got["next_after_repair"] = int(dut.eval_code(_NEXT_SEQ))
                dut.eval_code(_FRAMED_IN_OUTBOX)
                got["outbox"] = raise_board_seq(dut, 40)
                with pytest.raises(FieldError, match="seq space of this id is used up") as used_up:
                    raise_board_seq(dut, MAX_SEQ)
                got["used_up"] = used_up.value.details["reason"]
                got["untouched"] = dut.eval_code(_READ_SEQ_FILES)
                return got
            finally:
                dut.close()

        got = await asyncio.to_thread(on_board)
    finally:
        await board.stop()
    assert got["fresh"] == (0, 40) and got["copies"] == (40, 40)
    assert got["damaged"] == (-1, 0) and got["next_after_repair"] == 1
    assert got["outbox"][0] >= 1 and got["outbox"][1] == 300  # type: ignore[index]
    assert got["used_up"] == "seq_space_used_up" and got["untouched"] == (300, 300)


def test_a_used_up_seq_space_is_refused_and_a_high_one_warned_before_the_board(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The gateway holds seq 4294967295 under the id: provision refuses before touching the board (was: a
    ValueError traceback after the board was opened, and the gateway suggested --seq-start 4294967296); past
    2**31 it warns. Test fails before."""
    from hil.cli.main import main as civicedge_main

    registry = tmp_path / "registry"
    db = tmp_path / "reports.sqlite"
    _stored(db, "sl-1", range(MAX_TOP, MAX_TOP + 1))
    base = ["provision", "--port", "/dev/ttyUSB-missing", "--zone", "centre", "--location", "52.1,4.2",
            "--registry", str(registry), "--db", str(db)]
    rc = civicedge_main([*base, "--id", "sl-1"])
    err = capsys.readouterr().err
    assert rc != 0 and "seq space of this id is used up" in err and "new id" in err, err
    assert "Traceback" not in err and "ttyUSB-missing" not in err, err  # refused before the port
    rc = civicedge_main([*base, "--id", "sl-2", "--seq-start", str(2 ** 31 + 5)])
    err = capsys.readouterr().err
    assert rc != 0 and "over half its report seq space" in err and "ttyUSB-missing" in err, err


MAX_TOP = 0xFFFFFFFF
