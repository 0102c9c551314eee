"""Free space on the report store's file system, and when to warn about it.

A full file system fails every commit (nothing is acknowledged: the devices keep their reports, but
the gateway has stopped collecting). ``[storage] min_free_mb`` (default 256 MiB) is the early warning:
below it the gateway logs a WARNING (once per :data:`WARN_EVERY_S` while it lasts) and ``run --check``
warns, and ``/healthz`` has the warning ``disk_low``; below an eighth of it (:data:`CRITICAL_SHARE`: 32 MiB
by default) that becomes the critical ``disk_critical``, because commits are then minutes from failing at
city load (~13 MB a minute at 333 reports/s). :attr:`DiskSpace.problem` is the one place that picks between
them (both thresholds live here); :class:`DiskHealth` holds the gateway's code until free space is clearly
back above its threshold (:data:`CLEAR_SHARE`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gateway.health import Problem

MIB = 1024 * 1024
# Below min_free_mb divided by this, /healthz is degraded, not only warned about (256 MiB -> 32 MiB).
CRITICAL_SHARE = 8
# While space stays low, the WARNING is repeated this often (with the figure of the moment).
WARN_EVERY_S = 3600.0
# A disk code is cleared only once free space is above its threshold plus this share of it (1/16: 272 MiB
# for disk_low at 256 MiB): space hovering at a threshold would flap /healthz 200/503 and STATUS=.
CLEAR_SHARE = 16


def free_bytes(path: Path) -> int | None:
    """Bytes the gateway's user may still write on the file system of the store ``path`` (``statvfs``
    ``f_bavail``, symlinks followed; for a store not created yet, where its nearest existing directory
    is), or None when it cannot be read. Before the store is open only (``run --check``, a migration):
    a running gateway measures its store with :func:`open_store_free_bytes`."""
    where = os.path.dirname(os.path.realpath(path))
    while not os.path.isdir(where) and os.path.dirname(where) != where:
        where = os.path.dirname(where)
    return _statvfs_free(where)


def open_store_free_bytes(path: Path) -> int | None:
    """Bytes the gateway's user may still write on the file system the store ``path`` is on, measured on
    the store's file itself (symlinks followed), or None when it cannot be ``stat``-ed there: its file
    system unmounted, its directory moved or deleted. Never a parent's file system: a lazily unmounted
    data directory leaves an empty directory on ``/`` whose free space says nothing about the store's."""
    return _statvfs_free(os.path.realpath(path))


def _statvfs_free(where: str) -> int | None:
    try:
        st = os.statvfs(where)
    except OSError:
        return None
    return int(st.f_bavail * st.f_frsize)


@dataclass(frozen=True)
class DiskSpace:
    """The store's free space, read once (one ``statvfs``), against ``[storage] min_free_mb``.

    Attributes:
        path: the store. free: bytes free (:func:`open_store_free_bytes` or, before the store is open,
            :func:`free_bytes`), None when it cannot be read.
        min_free_mb: the early-warning threshold in MiB (0: no warning).
    """

    path: Path
    free: int | None
    min_free_mb: int

    @property
    def low(self) -> str | None:
        """Say so when less than ``min_free_mb`` MiB is free (None when not, when ``min_free_mb`` is 0,
        or when the figure cannot be read)."""
        if not self.min_free_mb or self.free is None or self.free >= self.min_free_mb * MIB:
            return None
        return ("report store disk low: %s free on the file system of %s, below [storage] min_free_mb = %d MiB; "
                "commits fail when it is full (nothing is acknowledged then): free space or move the data "
                "directory" % (_size(self.free), self.path, self.min_free_mb))

    @property
    def critical(self) -> bool:
        """True when less than ``min_free_mb`` / :data:`CRITICAL_SHARE` MiB is free (then :attr:`low` says so
        too); never when ``min_free_mb`` is 0."""
        return bool(self.min_free_mb) and self.free is not None and self.free < self.min_free_mb * MIB // CRITICAL_SHARE

    @property
    def problem(self) -> Problem | None:
        """The health problem of this reading alone: ``disk_critical`` below :attr:`critical`'s threshold,
        else ``disk_low`` (a warning) below ``min_free_mb``, else None; ``subject`` the store's directory,
        symlinks resolved (where the free space is measured). One problem, never both: a monitor's ticket
        on ``disk_low`` becomes its page on ``disk_critical``. The gateway holds it with :class:`DiskHealth`."""
        low = self.low
        if low is None:
            return None
        return Problem("disk_critical" if self.critical else "disk_low", low, self.directory)

    @property
    def directory(self) -> str:
        """The store's directory, symlinks resolved: on the file system whose free space is measured."""
        return os.path.dirname(os.path.realpath(self.path))


class DiskHealth:
    """The gateway's ``disk_low``/``disk_critical``, with hysteresis: a code is raised as soon as free space
    is below its threshold (:attr:`DiskSpace.problem`) and cleared, or lowered from ``disk_critical`` to
    ``disk_low``, only once free space is above that threshold plus 1/:data:`CLEAR_SHARE` of it."""

    def __init__(self) -> None:
        self._code: str | None = None  # the code last given

    def problem(self, space: DiskSpace) -> Problem | None:
        """The disk problem for the reading ``space``, given what was said before."""
        found = space.problem
        code = None if found is None else found.code
        free = space.free
        if self._code is not None and code != "disk_critical" and space.min_free_mb and free is not None:
            low_at = space.min_free_mb * MIB
            if self._code == "disk_critical" and free < _clear_at(low_at // CRITICAL_SHARE):
                code = "disk_critical"
            elif code is None and free < _clear_at(low_at):
                code = "disk_low"
        self._code = code
        if code is None or (found is not None and found.code == code):
            return found
        # Held: free space is above the code's threshold, not yet by the margin.
        threshold = space.min_free_mb * MIB // (CRITICAL_SHARE if code == "disk_critical" else 1)
        return Problem(code, "report store disk low: %s free on the file system of %s, not yet back above %s "
                       "(%s[storage] min_free_mb = %d MiB, plus 1/%d of it)"
                       % (_size(free or 0), space.path, _size(_clear_at(threshold)),
                          "1/%d of " % CRITICAL_SHARE if code == "disk_critical" else "", space.min_free_mb,
                          CLEAR_SHARE), space.directory)


def _clear_at(threshold: int) -> int:
    """The free space at and above which the code of ``threshold`` (bytes) is cleared."""
    return threshold + threshold // CLEAR_SHARE


def measure(path: Path, min_free_mb: int) -> DiskSpace:
    """Read the free space of the open store ``path``'s file system once (:func:`open_store_free_bytes`:
    None while the store's file cannot be found), for both the warning and the ``/healthz`` decision."""
    return DiskSpace(path, open_store_free_bytes(path), min_free_mb)


def low_space(path: Path, min_free_mb: int) -> str | None:
    """:attr:`DiskSpace.low` of one reading before the store is open (``run --check``: :func:`free_bytes`,
    where it will be created): the warning when less than ``min_free_mb`` MiB is free."""
    return DiskSpace(path, free_bytes(path), min_free_mb).low


def _size(n: int) -> str:
    """``n`` bytes for people: ``0 bytes``, ``812 KiB``, ``37.5 MiB``, ``2.1 GiB``."""
    if n < 1024:
        return "%d bytes" % n
    if n < MIB:
        return "%d KiB" % (n // 1024)
    if n < 1024 * MIB:
        return "%.1f MiB" % (n / MIB)
    return "%.1f GiB" % (n / (1024 * MIB))
