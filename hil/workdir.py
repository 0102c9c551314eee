"""Work directories that a command recreates at each run (demo, scenarios), and never a foreign one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
    """Remove and recreate ``path`` (already checked with :func:`workdir_problem`) and mark it."""
    try:
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        (path / marker).write_text(note + "\n")
    except OSError as exc:  # e.g. under /proc, or a read-only mount: root passes os.access() there
        raise WorkdirError(f"cannot create the work directory {path}: {exc.strerror or exc}; "
                           "choose another --workdir", path=str(path)) from exc
    return path


class WorkdirError(HilError):
    """A work directory could not be created."""
