"""The URI that opens a report store read-only."""

from __future__ import annotations

from pathlib import Path


def read_only_uri(db_path: Path | str) -> str:
    """``file:`` URI opening ``db_path`` read-only (``sqlite3.connect(..., uri=True)``).

    ``as_uri()`` escapes ``?`` and ``#``, which in a hand-built ``file:PATH?mode=ro`` would end the
    file name (a store under a directory named ``a#b`` was opened as ``a``).
    """
    return Path(db_path).resolve().as_uri() + "?mode=ro"
