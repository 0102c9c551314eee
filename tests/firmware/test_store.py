"""Seq counter, outbox and atomic files on persistent flash across reboots and power loss (MicroPython)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

SEQ = "from civic.store.seq import SeqCounter\nS = SeqCounter('/flash/seq.bin', block=8)\n"
OUTBOX = "from civic.store.outbox import Outbox\nO = Outbox('/flash/outbox', max_entries=4)\n"


def test_seq_never_repeats_across_reboots_and_power_loss(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    seen: list[int] = []
    out = flash_run(SEQ + "print([S.next() for _ in range(5)])\n", flash).stdout
    seen += eval(out)
    assert seen == [1, 2, 3, 4, 5]
    # power loss right after handing out 3 more numbers (no clean shutdown exists anyway)
    res = flash_run(SEQ + "print([S.next() for _ in range(3)])\nraise OSError(5)\n", flash, expect_error=True)
    seen += eval(res.stdout)
    for _ in range(3):
        seen += eval(flash_run(SEQ + "print([S.next() for _ in range(10)])\n", flash).stdout)
    assert len(seen) == len(set(seen)), seen
    assert seen == sorted(seen)
    # power loss while writing a reservation: the temp file never got renamed
    code = SEQ + "f = open('/flash/seq.bin.tmp', 'wb'); f.write(b'\\x00\\x00'); f.close()\nraise OSError(5)\n"
    flash_run(code, flash, expect_error=True)
    nxt = eval(flash_run(SEQ + "print([S.last, S.next()])\n", flash).stdout)
    assert nxt[1] > max(seen) and nxt[0] >= max(seen)


def test_seq_corrupt_file_refuses_to_guess(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash_run(SEQ + "S.next()\n", flash)
    (flash / "seq.bin").write_bytes(b"\x00\x00\x00\x00\x00\x00\x00\x09")
    (flash / "seq.bin.bak").write_bytes(b"\x01\x02")
    res = flash_run(SEQ, flash, expect_error=True)
    assert "CorruptFile" in res.error.traceback


def test_seq_one_damaged_copy_is_recovered_from_the_other(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    # One damaged 8-byte file used to stop the whole firmware (lamp control included) until a
    # technician came. The reservation is mirrored; either copy bounds every seq ever used.
    flash = tmp_path / "flash"
    used = eval(flash_run(SEQ + "print([S.next() for _ in range(11)])\n", flash).stdout)
    for damaged in ("seq.bin", "seq.bin.bak"):
        (flash / damaged).write_bytes(b"\x00\x00\x00\x00\x00\x00\x00\x09")
        out = flash_run(SEQ + "print([S.repaired, S.next()])\n", flash).stdout
        repaired, nxt = eval(out.replace("None", "'-'"))
        assert repaired == "/flash/" + damaged
        assert nxt > max(used)
        used.append(nxt)
    # the damaged copy was rewritten: the next boot reads both again
    assert eval(flash_run(SEQ + "print([S.repaired is None, S.next()])\n", flash).stdout)[1] > max(used)


def test_outbox_persists_in_seq_order_and_acks(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash_run(OUTBOX + "for s in (3, 5, 9):\n    O.append(s, b'frame%d' % s)\n", flash)
    out = flash_run(OUTBOX + "print(O.pending(), O.read(5), O.read(4), len(O))\nprint(O.ack(5), O.pending())\n", flash)
    assert out.stdout.splitlines() == ["[3, 5, 9] b'frame5' None 3", "2 [9]"]
    out = flash_run(OUTBOX + "print(O.pending(), O.ack(100), O.pending())\n", flash)
    assert out.stdout.strip() == "[9] 1 []"
    assert sorted(p.name for p in (flash / "outbox").iterdir()) == []


def test_outbox_full_drops_oldest_non_alarm(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    code = OUTBOX + (
        "O.append(1, b'a1', alarm=True)\nO.append(2, b'r2')\nO.append(3, b'a3', alarm=True)\nO.append(4, b'r4')\n"
        "O.append(5, b'r5')\nprint(O.pending(), O.dropped)\nO.append(6, b'r6')\nprint(O.pending(), O.dropped)\n"
        "O.append(7, b'a7', alarm=True)\nprint(O.pending(), O.dropped)\n"
    )
    assert flash_run(code, flash).stdout.splitlines() == ["[1, 3, 4, 5] 1", "[1, 3, 5, 6] 2", "[1, 3, 6, 7] 3"]
    # after a reboot the drop count is still there; no drop while there is room; then, with only
    # alarms left, the oldest alarm goes
    code = OUTBOX + "O.ack(6)\nfor s in (8, 9, 10):\n    O.append(s, b'a', alarm=True)\nprint(O.pending(), O.dropped)\n"
    assert flash_run(code, flash).stdout.strip() == "[7, 8, 9, 10] 3"
    code = OUTBOX + "O.append(11, b'a', alarm=True)\nO.append(12, b'a', alarm=True)\nprint(O.pending())\n"
    assert flash_run(code, flash).stdout.strip() == "[9, 10, 11, 12]"


def test_outbox_survives_power_loss_mid_write(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash_run(OUTBOX + "O.append(1, b'one')\nO.append(2, b'two')\n", flash)
    # power lost while writing entry 3: only its temp file exists, half written
    code = OUTBOX + "f = open('/flash/outbox/00000003.r.tmp', 'wb'); f.write(b'\\x12\\x34'); f.close()\nraise OSError(5)\n"
    flash_run(code, flash, expect_error=True)
    # a damaged entry (bit rot) is detected by its CRC and removed
    entry = flash / "outbox" / "00000002.r"
    data = bytearray(entry.read_bytes())
    data[-1] ^= 1
    entry.write_bytes(bytes(data))
    out = flash_run(OUTBOX + "print(O.pending(), O.read(1), O.corrupt)\nO.append(3, b'three')\nprint(O.pending())\n", flash)
    assert out.stdout.splitlines() == ["[1] b'one' 1", "[1, 3]"]
    assert sorted(p.name for p in (flash / "outbox").iterdir()) == ["00000001.r", "00000003.r"]


def test_outbox_rejects_non_increasing_seq(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    code = OUTBOX + "O.append(5, b'x')\ntry:\n    O.append(5, b'y')\nexcept ValueError as e:\n    print('refused', e)\n"
    assert flash_run(code, tmp_path / "flash").stdout.startswith("refused outbox: seq 5 not above 5")


def test_atomic_write_replaces_and_detects_damage(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    code = (
        "from civic.store import atomic\n"
        "print(atomic.read('/flash/x'))\natomic.write('/flash/x', b'one')\natomic.write('/flash/x', b'two')\n"
        "print(atomic.read('/flash/x'), atomic.exists('/flash/x.tmp'))\n"
        "open('/flash/y', 'wb').write(b'abc')\n"
        "try:\n    atomic.read('/flash/y')\nexcept atomic.CorruptFile as e:\n    print('corrupt', e.path)\n"
    )
    assert flash_run(code, tmp_path / "flash").stdout.splitlines() == ["None", "b'two' False", "corrupt /flash/y"]


def test_seq_refuses_to_wrap(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    code = (
        "from civic.store import atomic\nimport struct\natomic.write('/flash/seq.bin', struct.pack('>I', 0xFFFFFFFE))\n"
        + SEQ + "print(S.next())\n"
        "from civic.store.seq import SeqExhausted\n"
        "try:\n    S.next()\nexcept SeqExhausted:\n    print('exhausted')\n"
    )
    assert flash_run(code, flash).stdout.split() == [str(0xFFFFFFFF), "exhausted"]


def test_atomic_read_recovers_a_complete_temp_file(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """FAT path: target removed, power lost before the rename -> the complete temp file is the state."""
    code = (
        "import os\nfrom civic.store import atomic\n"
        "atomic.write('/flash/a', b'new state')\nos.rename('/flash/a', '/flash/a.tmp')\n"
        "print(atomic.read('/flash/a'))\n"
        "open('/flash/b.tmp', 'wb').write(b'\\x00\\x01\\x02\\x03half')\nprint(atomic.read('/flash/b'))\n"
    )
    assert flash_run(code, tmp_path / "flash").stdout.splitlines() == ["b'new state'", "None"]


def test_atomic_read_absent_only_on_enoent(flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """Only ENOENT reads as absent (None). Any other error opening or reading the file (a flash read
    error, EIO; a directory at the path) raises CorruptFile: read as "absent", an unreadable ledger
    used to start afresh with a full epsilon budget (privacy audit F2)."""
    code = (
        "import builtins, errno, os\nfrom civic.store import atomic\n"
        "def show(p):\n"
        "    try:\n        print(atomic.read(p))\n    except atomic.CorruptFile as e:\n        print('corrupt', e.path)\n"
        "os.mkdir('/flash/d')\nos.mkdir('/flash/t.tmp')\n"
        "show('/flash/missing')\nshow('/flash/d')\nshow('/flash/t')\n"
        # a flash read error (EIO) on one file, as a failing littlefs block gives it
        "atomic.write('/flash/x', b'ok')\n_open = open\n"
        "def failing(p, *a, _o=_open):\n"
        "    if p == '/flash/x':\n        raise OSError(ERR)\n    return _o(p, *a)\n"
        "builtins.open = failing\n"
        "ERR = errno.EIO\nshow('/flash/x')\nERR = errno.ENOENT\nshow('/flash/x')\nbuiltins.open = _open\n"
    )
    assert flash_run(code, tmp_path / "flash").stdout.splitlines() == [
        "None", "corrupt /flash/d", "corrupt /flash/t.tmp", "corrupt /flash/x", "None"]
