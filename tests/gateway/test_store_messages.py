"""What the store says when its file goes away or a write fails: true, and naming what to do.

QA findings: a store moved away (``mv``) while the gateway ran was reported as deleted, "what it held
is lost when the gateway stops", while the file was intact under its new name; a write refused by the
file-size limit (``ulimit -f``) was a bare "disk I/O error".
"""

from __future__ import annotations

import asyncio
import logging
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import make_env

from gateway.config import load_config
from gateway.service import STORE_WATCH_S, Gateway
from gateway.storage import ReportRecord, ReportStore


def record(seq: int) -> ReportRecord:
    return ReportRecord(device="b1", seq=seq, kind="bin", zone="north", type="win", w=1_790_000_000 + 900 * seq,
                        l=900, m={"fill": 40, "temp": 12}, e={}, a=[], fw="1.0", received_at=1_790_000_000.0,
                        link="serial:x", digest="%064x" % seq)


def test_a_moved_store_is_not_called_lost_a_deleted_one_is(tmp_path: Path) -> None:
    db = tmp_path / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw1")
    try:
        store.insert_batch([record(1)])
        assert store.file_problem() is None
        moved = tmp_path / "moved.sqlite"
        db.rename(moved)
        problem = store.file_problem() or ""
        assert "was moved away while the gateway ran" in problem and "nothing is lost" in problem
        assert "now %s, as its open descriptor says" % moved in problem, problem
        assert "mv -T -n %s %s" % (moved, db) in problem and "lost when the gateway stops" not in problem
        moved.unlink()
        problem = store.file_problem() or ""
        assert "was deleted while the gateway ran" in problem and "lost when the gateway stops" in problem
    finally:
        store.close()


async def test_the_gateways_error_line_for_a_moved_store_does_not_claim_loss(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gw = Gateway(load_config(make_env(tmp_path)))
    await gw.start()
    try:
        gw.store.path.rename(tmp_path / "elsewhere.sqlite")
        for _ in range(int(STORE_WATCH_S * 10) + 20):
            lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            if lines:
                break
            await asyncio.sleep(0.1)
        assert len(lines) == 1, lines
        assert "was moved away" in lines[0] and "lost when" not in lines[0], lines[0]
        assert "nothing more is committed or acknowledged" in lines[0]
    finally:
        await gw.stop()


FILL_UNTIL_REFUSED = textwrap.dedent('''
    import sys
    from pathlib import Path
    from gateway.errors import StorageError
    from gateway.storage import ReportRecord, ReportStore
    store = ReportStore(Path(sys.argv[1]), gateway_id="gw")
    seq = 0
    try:
        while seq < 100000:
            batch = []
            for _ in range(50):
                seq += 1
                batch.append(ReportRecord("b1", seq, "bin", "north", "win", 1_790_000_000 + 900 * seq, 900,
                                          {"fill": 40, "temp": 12}, {}, [], "1.0", 1_790_000_000.0, "serial:x",
                                          "%064x" % seq))
            store.insert_batch(batch)
    except StorageError as exc:
        print(exc.reason, exc)
''')


def test_a_write_refused_by_the_file_size_limit_says_so(tmp_path: Path) -> None:
    limit = 256 * 1024

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([sys.executable, "-c", FILL_UNTIL_REFUSED, str(tmp_path / "reports.sqlite")],
                          capture_output=True, text=True, timeout=120, preexec_fn=limited)
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip()
    assert out.startswith("write_failed storing 50 reports failed: disk I/O error"), out
    assert "likely cause: the gateway's file-size limit (ulimit -f, RLIMIT_FSIZE) is %d bytes" % limit in out, out


def test_schema_too_new_names_the_store_once(tmp_path: Path) -> None:
    import sqlite3

    from gateway.errors import StorageError
    from gateway.storage.schema import SCHEMA_VERSION

    db = tmp_path / "r.sqlite"
    ReportStore(db, gateway_id="gw1").close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(StorageError) as info:
        ReportStore(db, gateway_id="gw1")
    assert str(info.value).startswith("the report store %s has schema version %d" % (db, SCHEMA_VERSION + 1))
    assert str(info.value).count(str(db)) == 1
