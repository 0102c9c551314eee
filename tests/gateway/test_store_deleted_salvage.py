"""A store file deleted under a running gateway: the ERROR said only "what it held is lost when the gateway
stops unless a backup has it", though the QA drill copied it out whole through /proc/<pid>/fd while the
gateway ran. The message now gives those commands (this process's pid and descriptors); run literally,
they copy the store with its -wal, every acknowledged report included."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.storage import ReportRecord, ReportStore

T0 = 1_700_000_100 - (1_700_000_100 % 3600)


def rec(seq: int) -> ReportRecord:
    return ReportRecord(device="b1", seq=seq, kind="bin", zone="north", type="win", w=T0 + 900 * seq, l=900,
                        m={"fill": 40}, e={}, a=[], fw="1.0", received_at=T0 + 900 * seq + 5.0,
                        link="serial:/dev/x", digest="%064x" % seq)


@pytest.mark.parametrize("removed", [("r.sqlite", "r.sqlite-wal", "r.sqlite-shm"), ("r.sqlite",)])
def test_the_deleted_store_message_gives_the_copy_commands_that_salvage_it(tmp_path: Path,
                                                                           removed: tuple[str, ...]) -> None:
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw1")
    try:
        for seq in range(1, 31):
            store.insert_batch([rec(seq)])  # the last commits are in the -wal only (no checkpoint yet)
        for name in removed:
            (tmp_path / name).unlink()
        problem = store.file_problem() or ""
        assert "was deleted" in problem and "/proc/%d/fd/" % os.getpid() in problem, problem
        with pytest.raises(StorageError):
            store.insert_batch([rec(31)])  # nothing more is committed: the copies stay as of the last commit
        commands = re.search(r"as its user or root: (.*?); then stop the gateway", problem)
        assert commands is not None, problem
        subprocess.run(commands.group(1), shell=True, check=True)  # as an operator pastes them
    finally:
        store.close()
    salvaged = tmp_path / "r.sqlite.salvaged"
    assert (tmp_path / "r.sqlite.salvaged-wal").stat().st_size > 0  # the -wal held commits
    conn = sqlite3.connect(salvaged)
    try:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        assert [s for (s,) in conn.execute("SELECT seq FROM reports ORDER BY seq")] == list(range(1, 31))
    finally:
        conn.close()
