"""Outbox boot scan and reads on flash that fails to read (EIO), under MicroPython."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

# ``open`` fails with ERR on the files named in BAD, as a failing littlefs block gives it
FAILING = (
    "import builtins, errno\n_open = open\nBAD = set()\nERR = errno.EIO\n"
    "def failing(p, *a, _o=_open):\n"
    "    if p in BAD:\n        raise OSError(ERR)\n    return _o(p, *a)\n"
    "builtins.open = failing\n"
)
RESTORE = "builtins.open = _open\n"  # the harness reads the flash back with open
OUTBOX = "from civic.store.outbox import Outbox\nO = Outbox('/flash/outbox', max_entries=4)\n"


def test_an_unreadable_entry_stays_on_flash_and_is_read_at_the_next_boot(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """A read error (EIO) on an unacknowledged entry (here an alarm) is not damage: the boot scan
    skips it, counts it in ``unreadable`` and leaves it on flash; the next boot that can read it sends
    it. A damaged entry (bad CRC) is still removed. Until 2026-12-05 the read error removed it."""
    flash = tmp_path / "flash"
    flash_run(OUTBOX + "O.append(1, b'one')\nO.append(2, b'alarm', alarm=True)\nO.append(3, b'three')\n", flash)
    entry = flash / "outbox" / "00000003.r"
    data = bytearray(entry.read_bytes())
    data[-1] ^= 1
    entry.write_bytes(bytes(data))
    out = flash_run(FAILING + "BAD.add('/flash/outbox/00000002.a')\n" + OUTBOX
                    + "print(O.pending(), O.unreadable, O.corrupt)\n" + RESTORE, flash)
    assert out.stdout.splitlines() == ["[1] 1 1"]
    assert sorted(p.name for p in (flash / "outbox").iterdir()) == ["00000001.r", "00000002.a"]
    # the next boot reads it
    out = flash_run(OUTBOX + "print(O.pending(), O.read(2), O.unreadable, O.corrupt)\n", flash)
    assert out.stdout.splitlines() == ["[1, 2] b'alarm' 0 0"]


def test_a_read_error_while_running_leaves_the_entry_for_the_next_boot(
        flash_run: Callable[..., Any], tmp_path: Path) -> None:
    """A read error on an indexed entry while running takes it out of the index (the frames do not
    claim it held: protocol §2 ``h``) but not off flash; a damaged one is removed as before."""
    flash = tmp_path / "flash"
    code = (FAILING + OUTBOX + "O.append(1, b'one')\nO.append(2, b'alarm', alarm=True)\n"
            "BAD.add('/flash/outbox/00000002.a')\n"
            "print(O.read(2), O.pending(), O.held_runs(), O.unreadable, O.corrupt)\n" + RESTORE)
    assert flash_run(code, flash).stdout.splitlines() == ["None [1] [1, 1] 1 0"]
    assert (flash / "outbox" / "00000002.a").exists()
    out = flash_run(OUTBOX + "print(O.pending(), O.read(2))\n", flash)
    assert out.stdout.splitlines() == ["[1, 2] b'alarm'"]
