"""The swap of ``civicedge gateway restore``: the current files aside, the staged copies in, never a place empty.

Each step is one rename (or hard link) done with SIGINT/SIGTERM/SIGHUP blocked and recorded with its undo, so an
interrupt lands between steps and the rollback knows exactly what to undo. A file with a staged copy is first
hard-linked into the aside directory and then replaced by ``os.replace`` (the place always holds a whole file,
old or new); ``keys/`` is swapped with ``renameat2(RENAME_EXCHANGE)`` where Linux has it. The side files SQLite
would apply to a database (``-wal``, ``-shm``, ``-journal``) are moved aside before their database is replaced.

While the swap runs, ``<data_dir>/restore-in-progress`` says so (and where the replaced files are): only a
SIGKILL or a power cut leaves it behind, and then the files may be half old, half restored.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Callable, Iterator

from gateway.private_dirs import fsync_dir
from gateway.storage.restore_marker import MARKER as MARKER  # re-exported: restore_cmd names it

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class Interrupted(BaseException):
    """SIGTERM or SIGHUP during the swap (SIGINT raises KeyboardInterrupt): rolled back like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Place:
    """One thing to put in place: ``staged`` (None: the current one is only moved aside) at ``place``."""

    place: Path
    staged: Path | None
    aside: Path


@dataclass
class Swap:
    """The steps done so far, each with its undo; what was moved aside."""

    owner: tuple[int, int] | None = None
    undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    moved: list[tuple[Path, Path]] = field(default_factory=list)

    def step(self, what: str, do: Callable[[], object], undo: Callable[[], None] | None) -> None:
        """Run ``do`` and record ``undo`` with the signals blocked: an interrupt comes before or after both."""
        with signals_blocked():
            do()
            if undo is not None:
                self.undo.append((what, undo))

    def rollback(self) -> list[str]:
        """Undo every step in reverse order, signals blocked; the problems met (each names what is where)."""
        problems = []
        with signals_blocked():
            for what, undo in reversed(self.undo):
                try:
                    undo()
                except OSError as exc:
                    problems.append("could not undo %s: %s" % (what, exc.strerror or exc))
            self.undo.clear()
        return problems


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP are held meanwhile and delivered after (in the main thread only): for a
    step that must not be cut in half, such as a rename pair or a deletion and its commit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Interrupted` meanwhile (SIGINT raises KeyboardInterrupt as always)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _libc_renameat2() -> Callable[[bytes, bytes], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int

    def exchange(a: bytes, b: bytes) -> int:
        return int(fn(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE))
    return exchange


_EXCHANGE = _libc_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically (Linux renameat2 RENAME_EXCHANGE); False where that is not available.

    Raises:
        OSError: the exchange failed for another reason than not being supported.
    """
    if _EXCHANGE is None:
        return False
    if _EXCHANGE(os.fsencode(a), os.fsencode(b)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _rename(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; something already at ``dst`` is never replaced."""
    if os.path.lexists(dst):
        raise OSError(errno.EEXIST, "already exists", str(dst))
    os.rename(src, dst)


def chown(path: Path, owner: tuple[int, int] | None) -> None:
    """As root, give ``path`` the gateway user's ownership (``owner``), not root's."""
    if owner is not None and os.geteuid() == 0:
        os.chown(path, *owner, follow_symlinks=False)


def write_marker(data_dir: Path, info: dict[str, str], owner: tuple[int, int] | None) -> Path:
    """Write ``<data_dir>/restore-in-progress`` (JSON: what is being restored, where the old files go), synced."""
    marker = data_dir / MARKER
    tmp = data_dir / (".%s.%d" % (MARKER, os.getpid()))
    text = json.dumps(dict(info, pid=str(os.getpid()), started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           meaning="a civicedge gateway restore was swapping files here; if it is not running any "
                                   "more, it was cut off: the files may be half old, half restored. Run the same "
                                   "restore again, or move the files in 'aside' back by hand, then remove this "
                                   "file"), indent=1)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("utf-8") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    chown(tmp, owner)
    os.replace(tmp, marker)
    fsync_dir(data_dir)
    return marker


def swap(places: list[Place], aside_dirs: list[Path], sync: list[Path], data_dir: Path, info: dict[str, str],
         owner: tuple[int, int] | None) -> Swap:
    """Move the current files aside and the staged ones in (see the module docstring); undone on any exception.

    ``places`` are done in order: side files (no staged copy) must come before the database they belong to.

    Raises:
        BaseException: whatever interrupted it, after the rollback; the :class:`Swap` is attached as
            ``exc.swap_state`` with ``exc.rollback_problems``.
    """
    sw = Swap(owner)
    try:
        with interruptible():
            marker = data_dir / MARKER
            sw.step("writing %s" % marker, lambda: write_marker(data_dir, info, owner), lambda: _unlink(marker))
            for d in aside_dirs:
                if not os.path.lexists(d):
                    sw.step("creating %s" % d, functools.partial(_mkdir, d, owner), functools.partial(_rmdir, d))
            for p in places:
                _put(sw, p)
            for d in dict.fromkeys(sync):
                if d.is_dir():
                    fsync_dir(d)
            sw.step("removing %s" % marker, lambda: _unlink(marker), None)
    except BaseException as exc:
        problems = sw.rollback()
        exc.swap_state = sw  # type: ignore[attr-defined]
        exc.rollback_problems = problems  # type: ignore[attr-defined]
        raise
    return sw


def _put(sw: Swap, p: Place) -> None:
    place, staged, aside = p.place, p.staged, p.aside
    exists = os.path.lexists(place)
    if staged is None:
        if exists:
            sw.step("moving %s aside" % place, lambda: _rename(place, aside), lambda: _rename(aside, place))
            sw.moved.append((place, aside))
        return
    if not exists:
        sw.step("putting %s in place" % place, lambda: _rename(staged, place), lambda: _rename(place, staged))
        return
    if os.path.isdir(place) and not os.path.islink(place):
        done = [False]

        def swap_dirs() -> None:
            done[0] = exchange(staged, place)
        sw.step("exchanging %s with the restored copy" % place, swap_dirs,
                lambda: None if not done[0] else _exchange_back(staged, place))
        if done[0]:  # staged now holds the old directory
            sw.step("moving the old %s aside" % place, lambda: _rename(staged, aside), lambda: _rename(aside, staged))
        else:
            sw.step("moving %s aside" % place, lambda: _rename(place, aside), lambda: _rename(aside, place))
            sw.step("putting %s in place" % place, lambda: _rename(staged, place), lambda: _rename(place, staged))
        sw.moved.append((place, aside))
        return
    try:
        sw.step("linking %s into %s" % (place, aside), lambda: os.link(place, aside, follow_symlinks=False),
                lambda: _unlink(aside))
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        sw.step("moving %s aside" % place, lambda: _rename(place, aside), lambda: _rename(aside, place))
        sw.step("putting %s in place" % place, lambda: _rename(staged, place), lambda: _rename(place, staged))
    else:
        # The old file stays reachable at aside: replacing place never leaves it without a file.
        sw.step("replacing %s" % place, lambda: os.replace(staged, place), lambda: os.replace(aside, place))
    sw.moved.append((place, aside))


def _exchange_back(staged: Path, place: Path) -> None:
    if not exchange(staged, place):
        raise OSError(errno.ENOSYS, "cannot exchange back", str(place))


def _unlink(p: Path) -> None:
    if os.path.lexists(p):
        os.unlink(p)


def _mkdir(d: Path, owner: tuple[int, int] | None) -> None:
    os.mkdir(d, 0o700)
    chown(d, owner)


def _rmdir(d: Path) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(d)
