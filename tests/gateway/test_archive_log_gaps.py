"""archive-log review fixes: missing oldest entries are no continuation, re-archiving, readers, markers, vfat."""

from __future__ import annotations

import errno
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.storage.provenance import GENESIS, export_chain_summary
from gateway.storage.restore_marker import MARKER
from helpers import store_dir_not_writable
from tests.gateway.test_cli_archive_log import (  # noqa: F401 (db: a fixture used by name)
    archive, db, export, head_of, verify)


def sql(db: Path, statement: str, *params: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        found = conn.execute(statement, params).fetchall()
        conn.commit()
        return found
    finally:
        conn.close()


def test_oldest_entries_removed_without_an_archive_break_the_log_and_are_not_archived(
        tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full, live, arc = tmp_path / "full.jsonl", tmp_path / "live.jsonl", tmp_path / "arc.jsonl"
    assert export(db, full) == 0
    sql(db, "DELETE FROM chain WHERE pos <= 4")  # no archive-log ever ran: an insider, or a lost page
    assert export(db, live) == 0
    assert '"after"' not in live.read_text().splitlines()[0]  # no checkpoint line vouches for the missing part
    capsys.readouterr()
    for expect in ([], ["--expect-head", head_of(full)], ["--expect-head", head_of(full), "--expect-count", "6"]):
        assert verify(live, *expect) == 1
        assert capsys.readouterr().out.startswith("BROKEN at line 1 (prev_mismatch)")
    # archive-log would hide the gap in an archive: refused, nothing written or removed.
    before = sql(db, "SELECT * FROM chain ORDER BY pos")
    assert archive(db, arc, "--keep", "2") == 1
    assert ("error (corrupt): the store's provenance chain starts at pos 5: entries pos 1 to 4 are missing and no "
            "archive records them (none was made)") in capsys.readouterr().err
    assert not arc.exists() and sql(db, "SELECT * FROM chain ORDER BY pos") == before
    assert sql(db, "SELECT count(*) FROM chain_checkpoints") == [(0,)]


def test_entries_missing_after_an_archive_or_not_linking_to_it_are_refused(
        tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a1 = tmp_path / "a1.jsonl"
    assert archive(db, a1, "--before", "4") == 0  # checkpoint at pos 3
    sql(db, "DELETE FROM chain WHERE pos <= 5")  # pos 4 and 5 gone, not archived
    live = tmp_path / "live.jsonl"
    assert export(db, live) == 0
    capsys.readouterr()
    assert verify(live, "--after", head_of(a1)) == 1
    assert "BROKEN at line 1 (prev_mismatch)" in capsys.readouterr().out
    assert archive(db, tmp_path / "a2.jsonl", "--keep", "1") == 1
    assert ("entries pos 4 to 5 are missing and no archive records them (the last archive ends at pos 3)"
            in capsys.readouterr().err)
    # A checkpoint right before the first entry, but with another hash (the entries replaced): refused too.
    sql(db, "UPDATE chain_checkpoints SET pos = 5")
    assert archive(db, tmp_path / "a2.jsonl", "--keep", "1") == 1
    assert "its first entry (pos 6) does not link to the archive recorded at pos 5" in capsys.readouterr().err
    assert not (tmp_path / "a2.jsonl").exists()


def test_a_continuation_meets_expectations_only_with_after(tmp_path: Path, db: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    full, arc, live = tmp_path / "full.jsonl", tmp_path / "a.jsonl", tmp_path / "live.jsonl"
    assert export(db, full) == 0
    assert archive(db, arc, "--before", "5") == 0
    assert export(db, live) == 0
    capsys.readouterr()
    for expect in (["--expect-head", head_of(full)], ["--expect-count", "6"]):
        assert verify(live, *expect) == 1
        out, err = capsys.readouterr()
        assert out == "" and "error (continuation): the log starts after pos 4, hash %s" % head_of(arc) in err
        assert verify(live, *expect, "--after", head_of(arc)) == 0
        assert capsys.readouterr().out.startswith("OK: 6 entries (pos 5 to 10)")
    assert verify(live) == 0  # no expectation: OK with the note that it is a continuation
    assert "continues an archived part" in capsys.readouterr().err


def test_a_checkpoint_line_with_the_genesis_hash_is_rejected(tmp_path: Path, db: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    full = tmp_path / "full.jsonl"
    assert export(db, full) == 0
    forged = tmp_path / "forged.jsonl"
    forged.write_text('{"after":{"pos":1,"hash":"%s"}}\n' % GENESIS + "".join(
        line.replace('"pos":%d,' % n, '"pos":%d,' % (n + 1)) + "\n"
        for n, line in enumerate(full.read_text().splitlines(), start=1)))
    capsys.readouterr()
    assert verify(forged) == 1
    assert capsys.readouterr().out.startswith("BROKEN at line 1 (syntax)")


def test_archiving_again_after_a_recovery_merge_put_the_entries_back(
        tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backup = tmp_path / "backup.sqlite"
    src, dst = sqlite3.connect(db), sqlite3.connect(backup)
    src.backup(dst)
    dst.close()
    src.close()
    a1, a2 = tmp_path / "a1.jsonl", tmp_path / "a2.jsonl"
    assert archive(db, a1, "--before", "7") == 0
    recorded = sql(db, "SELECT * FROM chain_checkpoints")
    conn = sqlite3.connect(db)
    conn.execute("ATTACH ? AS b", (str(backup),))
    conn.execute("INSERT OR IGNORE INTO main.chain SELECT * FROM b.chain")  # the recovery merge's way
    conn.commit()
    conn.close()
    capsys.readouterr()
    assert archive(db, a2, "--before", "7") == 0
    assert "already recorded an archive of the entries up to pos 6 with the same head (%s" % a1 \
        in capsys.readouterr().err
    assert a2.read_bytes() == a1.read_bytes()
    assert sql(db, "SELECT * FROM chain_checkpoints") == recorded
    assert [r[0] for r in sql(db, "SELECT pos FROM chain ORDER BY pos")] == [7, 8, 9, 10]
    # A checkpoint at that pos with another hash is a fork: refused before anything is written.
    sql(db, "UPDATE chain_checkpoints SET hash = ?", "ab" * 32)
    conn = sqlite3.connect(db)
    conn.execute("ATTACH ? AS b", (str(backup),))
    conn.execute("INSERT OR IGNORE INTO main.chain SELECT * FROM b.chain")
    conn.commit()
    conn.close()
    a3 = tmp_path / "a3.jsonl"
    assert archive(db, a3, "--before", "7") == 1
    assert "ends at hash %s: the chain forked" % ("ab" * 32) in capsys.readouterr().err
    assert not a3.exists() and len(sql(db, "SELECT pos FROM chain")) == 10


def test_a_restore_cut_off_in_its_swap_is_refused(tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (db.parent / MARKER).write_text(json.dumps({"pid": 999999999, "started": "x", "backup": "/b", "aside": "/a"}))
    arc = tmp_path / "a.jsonl"
    assert archive(db, arc, "--before", "5") == 1
    assert "error (restore_in_progress): %s exists" % (db.parent / MARKER) in capsys.readouterr().err
    assert not arc.exists() and len(sql(db, "SELECT pos FROM chain")) == 10


def test_a_file_system_refusing_chmod_and_links_gets_the_archive(tmp_path: Path, db: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_args: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")  # vfat without `quiet`

    monkeypatch.setattr("gateway.storage.chain_archive.os.chmod", refused)
    monkeypatch.setattr("gateway.storage.chain_archive.os.link", refused)
    arc = tmp_path / "a.jsonl"
    assert archive(db, arc, "--before", "4") == 0
    assert verify(arc, "--expect-count", "3") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "data"]


@pytest.mark.parametrize("writable", [True, False])
def test_archive_log_while_an_export_reads_the_store(tmp_path: Path, db: Path, writable: bool,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway's data directory (writable) is exported from one snapshot with no hold: archive-log goes ahead
    during the export, which still writes the whole chain it began reading. Where the directory cannot be written
    the export reads immutable=1 (no locks): archive-log deleting under it made the sound store read as damaged,
    so the export's shared hold on <db>.lock keeps archive-log out until it ends."""
    if not writable:
        store_dir_not_writable(monkeypatch, db.parent)
    arc = tmp_path / "a.jsonl"
    tried: list[int] = []

    class Out(io.StringIO):
        def write(self, text: str) -> int:
            if not tried:  # the export has begun: archive-log now
                tried.append(archive(db, arc, "--keep", "1"))
            return super().write(text)

    out = Out()
    summary = export_chain_summary(db, out)
    assert summary.count == 10
    export_file = tmp_path / "e.jsonl"
    export_file.write_text(out.getvalue())
    assert verify(export_file, "--expect-count", "10") == 0
    err = capsys.readouterr().err
    if writable:
        assert tried == [0]
        assert [r[0] for r in sql(db, "SELECT pos FROM chain")] == [10]
        assert verify(arc, "--expect-count", "9") == 0
        assert head_of(arc) == json.loads(out.getvalue().splitlines()[8])["hash"]
        return
    assert tried == [1]
    assert "error (in_use): report store %s is being read by another civicedge command" % db in err
    assert not arc.exists() and len(sql(db, "SELECT pos FROM chain")) == 10
    assert archive(db, arc, "--keep", "1") == 0  # the export over, the archive goes ahead


def test_a_reader_in_another_process_is_named_with_its_command_line(tmp_path: Path, db: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    repo = Path(__file__).resolve().parents[2]
    # a reader holding the lock shared, as one_shot_read does where the directory cannot be written
    code = ("import sys; sys.path[:0] = %r; from pathlib import Path; from gateway.storage.sqlite_uri import "
            "ReadHold\nwith ReadHold(Path(%r), hold_live=True) as h:\n    assert h.granted\n"
            "    print('reading', flush=True); sys.stdin.read()" % ([str(repo)], str(db)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "reading\n"
        arc = tmp_path / "a.jsonl"
        assert archive(db, arc, "--keep", "1") == 1
        assert ("error (in_use): report store %s is being read by another civicedge command (pid %d: %s -c import sys"
                % (db, proc.pid, sys.executable)) in capsys.readouterr().err
        assert not arc.exists() and len(sql(db, "SELECT pos FROM chain")) == 10
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    assert archive(db, tmp_path / "a.jsonl", "--keep", "1") == 0
