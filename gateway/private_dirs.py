"""Directories only the gateway's user may enter (keys, the report store, retention settings), and making
a rename in a directory durable."""

from __future__ import annotations

import os
from pathlib import Path


def mkdir_private(path: Path) -> None:
    """Create ``path`` and every missing parent 0700 (an existing directory is left as it is).

    ``mkdir(parents=True)`` gives the parents the umask's mode: ``devices add`` before the first
    ``gateway run`` (the quick start) made the gateway's data directory, the registry's parent, 0755.
    """
    missing: list[Path] = []
    d = path
    while not os.path.lexists(d) and d.parent != d:
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            if not d.is_dir():  # made meanwhile by someone else: fine if it is a directory
                raise


def fsync_file(path: Path | str) -> None:
    """Flush a file another handle wrote (SQLite's backup of the store, say) to the disk before it is renamed."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename (or a new file) in ``directory`` durable: a power cut right after must not bring the old
    name back. Where the OS cannot open a directory (Windows: NTFS journals the rename itself) nothing is done."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        if os.name == "nt":
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
