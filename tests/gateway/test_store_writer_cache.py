"""The report store's writing connection keeps a page cache larger than SQLite's 2 MB default (a batch from a
few hundred devices touches more index pages than that holds); readers keep the default."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.storage.store import WRITER_CACHE_KIB, ReportStore


def test_the_writer_has_its_own_page_cache_and_the_file_is_unchanged(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw")
    try:
        assert store._conn.execute("PRAGMA cache_size").fetchone()[0] == -WRITER_CACHE_KIB
        assert WRITER_CACHE_KIB * 1024 > 2 * 1024 * 1024
        reader = sqlite3.connect(tmp_path / "r.sqlite")
        try:  # a connection setting, not stored in the file: other connections keep SQLite's default
            assert reader.execute("PRAGMA cache_size").fetchone()[0] == -2000
        finally:
            reader.close()
    finally:
        store.close()
