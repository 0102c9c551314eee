"""Work directories that a command recreates at each run (demo, scenarios), and never a foreign one."""

from __future__ import annotations

import shutil
from pathlib import Path


def workdir_problem(path: Path, *, marker: str, what: str) -> str | None:
    """Why ``path`` may not be (re)created as a work directory, or None if it may.

    Args:
        path: resolved candidate directory.
        marker: file name that marks a directory this command created.
        what: how the message names such a directory (e.g. ``"civicedge demo directory"``).
    """
    if path.exists() and not path.is_dir():
        return f"{path} is not a directory; choose another --workdir"
    if path.exists() and not (path / marker).exists() and any(path.iterdir()):
        return f"{path} exists and is not a {what}; choose another --workdir"
    return None


def recreate_workdir(path: Path, *, marker: str, note: str) -> Path:
    """Remove and recreate ``path`` (already checked with :func:`workdir_problem`) and mark it."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / marker).write_text(note + "\n")
    return path
