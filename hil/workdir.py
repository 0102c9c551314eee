"""Work directories that a command recreates at each run (demo, scenarios), and never a foreign one."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from gateway.pid_lock import LockHeld, take_pid_lock
from hil.errors import HilError


def workdir_problem(path: Path, *, marker: str, what: str) -> str | None:
    """Why ``path`` may not be (re)created as a work directory, or None if it may.

    Args:
        path: resolved candidate directory.
        marker: file name that marks a directory this command created.
        what: how the message names such a directory (e.g. ``"civicedge demo directory"``).
    """
    blocker = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        return f"{blocker} is not a directory; choose another --workdir"
    if blocker is not None and blocker != path and not os.access(blocker, os.W_OK | os.X_OK):
        return f"cannot create {path}: {blocker} is not writable; choose another --workdir"
    if path.exists() and not (path / marker).exists() and any(path.iterdir()):
        return f"{path} exists and is not a {what}; choose another --workdir"
    return None


def recreate_workdir(path: Path, *, marker: str, note: str) -> Path:
    """Empty (or create) ``path`` (already checked with :func:`workdir_problem`) and mark it.

    The directory itself is kept and only its contents are removed, so a dedicated mount point (an
    empty file system mounted at ``--workdir``) can be used: removing it would fail as "busy".
    """
    try:
        if path.exists():
            _empty(path, keep=marker)
        path.mkdir(parents=True, exist_ok=True)
        (path / marker).write_text(note + "\n")
    except OSError as exc:  # e.g. under /proc, or a read-only mount: root passes os.access() there
        reason = "it is on a read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc))
        raise WorkdirError(f"cannot create the work directory {path}: {reason}; "
                           "choose another --workdir", path=str(path)) from exc
    return path


def _empty(path: Path, *, keep: str) -> None:
    """Remove everything inside directory ``path`` but ``keep`` (the marker: a run that fails half-way
    leaves a directory the next run may still empty). Symlinks are removed, never followed; nothing
    is removed when something inside is on another file system (a mount under the work directory:
    emptying it would delete what that file system holds).

    Raises:
        OSError: EXDEV for such a mount, or what a removal raised.
    """
    device = path.stat().st_dev
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            sub = Path(root, name)
            if not sub.is_symlink() and sub.stat().st_dev != device:
                raise OSError(errno.EXDEV, f"{sub} is another file system mounted inside it; unmount it")
    for entry in path.iterdir():
        if entry.name == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def lock_path(path: Path) -> Path:
    """The lock file of work directory ``path``: next to it (``.<name>.lock``), so recreating the
    directory never deletes a lock another run holds."""
    return path.parent / f".{path.name or 'root'}.lock"


class WorkdirLock:
    """An exclusive ``flock`` on a work directory's lock file, held for a run (see :func:`lock_workdir`).

    The kernel releases it when the process dies, so a crashed run never leaves a stale lock. The
    lock file is left in place (deleting it would let two runs lock two different files).
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd is not None

    def release(self) -> None:
        """Release the lock (safe to call more than once)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "WorkdirLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_workdir(path: Path) -> WorkdirLock:
    """Take the exclusive lock of work directory ``path`` (resolved) for a whole run.

    Also proves up front that a file can be created where the directory goes (a directory that
    takes no files, such as under ``/proc``, fails here rather than after a run started).

    Raises:
        WorkdirInUseError: another run holds it (``holder_pid``).
        WorkdirError: the lock file cannot be created.
    """
    lock = lock_path(path)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = take_pid_lock(lock, mode=0o644)
    except LockHeld as held:
        holder = held.holder
        pid = int(holder) if holder.isdigit() else None
        raise WorkdirInUseError(f"work directory {path} is in use by another run (pid {holder or '?'}); "
                                "wait for it or choose another --workdir", path=str(path), holder_pid=pid) from None
    except OSError as exc:
        raise WorkdirError(f"cannot create the work directory {path}: {exc.strerror or exc}; "
                           "choose another --workdir", path=str(path)) from exc
    return WorkdirLock(path, fd)


class WorkdirError(HilError):
    """A work directory could not be created."""


class WorkdirInUseError(WorkdirError):
    """Another run holds the work directory's lock (``details["holder_pid"]``)."""
