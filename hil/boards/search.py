"""Where board names are looked up: ``CIVICEDGE_BOARDS`` directories first, then the shipped ``boards/``.

A site hands its own board files to technicians as a directory and points ``CIVICEDGE_BOARDS`` at it
(``os.pathsep``-separated, like ``PATH``): every command that takes a board name (``--board`` of
``sim up``/``flash``/``provision``, ``boards show/check``, the pytest ``board`` marker) then finds
them, with no edit of the installed package. The first directory holding ``NAME.toml`` wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gateway.resources import boards_dir
from hil.boards.errors import BoardError, suggest_board

BOARDS_PATH_ENV = "CIVICEDGE_BOARDS"
"""Environment variable: directories of board files searched before the shipped ``boards/``."""

SHIPPED = "shipped"
"""The ``origin`` of the shipped ``boards/`` directory."""


@dataclass(frozen=True)
class BoardDirectory:
    """One directory of the search path.

    Attributes:
        path: the directory.
        origin: where it comes from: ``CIVICEDGE_BOARDS`` or ``shipped``.
    """

    path: Path
    origin: str


def board_search_path(shipped: Path | None = None) -> list[BoardDirectory]:
    """The directories board names are looked up in, in order: ``CIVICEDGE_BOARDS``'s, then the shipped one.

    Args:
        shipped: the shipped boards' directory (default: :func:`gateway.resources.boards_dir`).

    Raises:
        BoardError: a ``CIVICEDGE_BOARDS`` entry that is not a directory (a typo must not hide a
            site's boards behind shipped ones of the same name).
    """
    dirs: list[BoardDirectory] = []
    for entry in os.environ.get(BOARDS_PATH_ENV, "").split(os.pathsep):
        if not entry.strip():
            continue
        path = Path(entry).expanduser()
        if not path.is_dir():
            raise BoardError(f"{entry!r} is not a directory; {BOARDS_PATH_ENV} lists directories of board files "
                             f"(separated by {os.pathsep!r}), searched before the shipped boards",
                             source=BOARDS_PATH_ENV, directory=entry)
        dirs.append(BoardDirectory(path, BOARDS_PATH_ENV))
    dirs.append(BoardDirectory(shipped if shipped is not None else boards_dir(), SHIPPED))
    return dirs


def find_board_files(dirs: list[BoardDirectory] | None = None) -> dict[str, tuple[Path, BoardDirectory]]:
    """Every board name of the search path with its file and directory (the first directory wins)."""
    found: dict[str, tuple[Path, BoardDirectory]] = {}
    for folder in dirs if dirs is not None else board_search_path():
        for path in sorted(folder.path.glob("*.toml")):
            found.setdefault(path.stem, (path, folder))
    return found


__all__ = ["BOARDS_PATH_ENV", "SHIPPED", "BoardDirectory", "board_search_path", "find_board_files", "suggest_board"]
