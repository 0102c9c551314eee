"""Directories only the gateway's user may enter (keys, the report store, retention settings)."""

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
