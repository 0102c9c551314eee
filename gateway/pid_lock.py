"""Lock files that name their holder: one process at a time (a gateway on its store, a run on its work directory).

The lock is an exclusive, non-blocking ``flock`` on a small file that holds the holder's pid, so the
one refused can say who holds it. The kernel releases it when the holder dies: a crash never leaves
a stale lock. The file stays in place when released; deleting it while held would let a second
process lock a new file of the same name.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class LockHeld(Exception):
    """Another process (or another descriptor in this one) holds the lock.

    Attributes:
        holder: the pid text the holder wrote ("" when it wrote none yet).
    """

    def __init__(self, holder: str) -> None:
        super().__init__("held by %s" % (holder or "an unknown process"))
        self.holder = holder


def _holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode("ascii", "replace").strip()


def take_pid_lock(path: Path, *, mode: int) -> int:
    """Hold the lock at ``path`` (created with ``mode`` if absent) and write this process's pid in it.

    Returns:
        The descriptor that holds the lock; closing it releases the lock.

    Raises:
        LockHeld: another holder has it.
        OSError: the file cannot be created or opened.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _holder(fd)
        os.close(fd)
        raise LockHeld(holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    return fd


def lock_holder(path: Path) -> str | None:
    """The pid text written by whoever holds the lock at ``path`` ("" when none was written), or None
    when nobody holds it or there is no such file. Creates nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _holder(fd)
    finally:
        os.close(fd)
    return None
