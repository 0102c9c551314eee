"""Who holds a ``flock`` on a store's ``<db>.lock``, as the kernel says (``/proc/locks``), not as the lock file's text.

The lock file names the pid of its last writer (:func:`gateway.pid_lock.take_pid_lock`), which is stale once that
process ended, says nothing of the readers holding the lock shared (``export-log``, ``routes plan``:
:class:`gateway.storage.sqlite_uri.ReadHold`), and is the pid as seen in the writer's own pid namespace (a
gateway in a container writes "1"). ``/proc/locks`` lists every holder by its pid in the reader's namespace and
the file by its device (major:minor, hex) and inode: both are compared, an inode number alone being reused on
every other file system. All best effort (Linux): an empty answer means "unknown", never "free" (btrfs, whose
``stat`` gives a subvolume's device rather than the one ``/proc/locks`` names, answers so).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class Flock(NamedTuple):
    """One granted ``flock`` from ``/proc/locks``."""

    pid: str
    write: bool  # LOCK_EX ("WRITE"), else LOCK_SH ("READ")
    inode: int
    major: int = -1  # the file's device, as ``os.major``/``os.minor`` of its ``st_dev``
    minor: int = -1


def flocks() -> list[Flock]:
    """Every granted ``flock`` on the machine as ``/proc/locks`` lists it ([] when it cannot be read)."""
    try:
        lines = Path("/proc/locks").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return []
    return [f for f in map(parse_flock, lines) if f is not None]


def parse_flock(line: str) -> Flock | None:
    """One ``/proc/locks`` line as a granted :class:`Flock`, or None (a POSIX lock, a waiter, a line not understood).

    ``"1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"``: pid 1234, device major 0xfd minor 0x01 (the kernel
    prints them in hex), inode 5678 (decimal); ``->`` marks a waiter, not a holder.
    """
    fields = line.split()
    if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK" or not fields[4].isdigit():
        return None
    dev_ino = fields[5].split(":")
    if len(dev_ino) != 3 or not dev_ino[2].isdigit():
        return None
    try:
        major, minor = int(dev_ino[0], 16), int(dev_ino[1], 16)
    except ValueError:
        return None
    return Flock(fields[4], fields[3] == "WRITE", int(dev_ino[2]), major, minor)


def flock_pids(lock: Path, *, write: bool | None = None) -> list[str]:
    """The pids holding a flock on the file ``lock`` (only exclusive ones with ``write=True``, only shared ones
    with ``write=False``), in /proc/locks order, each once; [] when unknown."""
    try:
        st = os.stat(lock)
    except OSError:
        return []
    file = (st.st_ino, os.major(st.st_dev), os.minor(st.st_dev))
    pids: list[str] = []
    for f in flocks():
        if (f.inode, f.major, f.minor) == file and (write is None or f.write == write) and f.pid not in pids:
            pids.append(f.pid)
    return pids


def command_of(pid: str) -> str:
    """``": <command line>"`` of process ``pid`` when it can be read (at most 120 characters, control
    characters escaped so a message stays on one line), else ""."""
    if not pid.isdigit():
        return ""
    try:
        raw = Path("/proc", pid, "cmdline").read_bytes()
    except OSError:
        return ""
    text = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return ": %s" % (text if len(text) <= 120 else text[:117] + "...") if text else ""


def readers_text(lock: Path, *, include_self: bool = False) -> str:
    """``pid N: <command line>`` of up to three processes holding ``lock`` shared (this one only with
    ``include_self``), or ``pid unknown``."""
    readers = [pid for pid in flock_pids(lock, write=False) if include_self or pid != str(os.getpid())]
    return ", ".join("pid %s%s" % (pid, command_of(pid)) for pid in readers[:3]) or "pid unknown"
