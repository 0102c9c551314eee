"""``civicedge gateway archive-log``: the oldest chain entries move to a verifiable file, the live chain links on."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_env

from gateway.storage import ReportRecord, ReportStore
from gateway.storage.provenance import GENESIS, last_hash
from hil.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def record(seq: int) -> ReportRecord:
    return ReportRecord(device="b1", seq=seq, kind="bin", zone="north", type="win", w=1_700_000_000 + 900 * seq, l=900,
                        m={"fill": 40}, e={}, a=[], fw="1.0", received_at=1_700_000_000.0, link="serial:x",
                        digest="%064x" % seq)


def add_reports(db: Path, first: int, last: int) -> None:
    store = ReportStore(db, gateway_id="gw1")
    store.insert_batch([record(s) for s in range(first, last + 1)])
    store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "reports.sqlite"
    path.parent.mkdir()
    add_reports(path, 1, 10)
    return path


def rows(db: Path, table: str = "chain") -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT * FROM %s ORDER BY pos" % table).fetchall()
    finally:
        conn.close()


def archive(db: Path, out: Path, *how: str) -> int:
    return main(["gateway", "archive-log", "--db", str(db), *how, "-o", str(out)])


def export(db: Path, out: Path) -> int:
    return main(["gateway", "export-log", "--db", str(db), "-o", str(out)])


def verify(path: Path, *argv: str) -> int:
    return main(["gateway", "verify-log", str(path), *argv])


def head_of(path: Path) -> str:
    return str(json.loads(path.read_text().splitlines()[-1])["hash"])


def test_archive_then_export_verify_both_and_together_they_are_the_whole_chain(
        tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = tmp_path / "full.jsonl"
    assert export(db, full) == 0
    capsys.readouterr()
    arc = tmp_path / "a1.jsonl"
    assert archive(db, arc, "--before", "7") == 0
    err = capsys.readouterr().err
    sha = hashlib.sha256(arc.read_bytes()).hexdigest()
    head = head_of(arc)
    assert "archived 6 entries (pos 1 to 6), head %s, to %s (sha256 %s)" % (head, arc, sha) in err
    # The archive is exactly the first six lines export-log wrote before: the same format, the same bytes.
    assert arc.read_text().splitlines() == full.read_text().splitlines()[:6]
    assert [r[0] for r in rows(db)] == [7, 8, 9, 10]
    assert [r[:3] for r in rows(db, "chain_checkpoints")] == [(6, head, 6)]
    assert rows(db, "chain_checkpoints")[0][4:] == (sha, str(arc))

    assert verify(arc, "--expect-head", head, "--expect-count", "6") == 0
    assert capsys.readouterr().out == "OK: 6 entries, chain intact, head %s\n" % head
    live = tmp_path / "live.jsonl"
    assert export(db, live) == 0
    full_head = head_of(full)
    assert "exported 4 entries (pos 7 to 10) after the archived pos 6, hash %s; head %s" % (head, full_head) \
        in capsys.readouterr().err
    lines = live.read_text().splitlines()
    assert json.loads(lines[0]) == {"after": {"pos": 6, "hash": head}}
    assert lines[1:] == full.read_text().splitlines()[6:]
    assert verify(live, "--after", head, "--expect-head", full_head, "--expect-count", "4") == 0
    out, err = capsys.readouterr()
    assert out == "OK: 4 entries (pos 7 to 10), chain intact after pos 6, hash %s, head %s\n" % (head, full_head)
    assert err == ""
    # Without --after it verifies too, but says what it does not prove.
    assert verify(live) == 0
    assert "continues an archived part" in capsys.readouterr().err
    # Another archive's head is not this log's start.
    assert verify(live, "--after", full_head) == 1
    assert "BROKEN at line 1 (prev_mismatch)" in capsys.readouterr().out
    # A whole log is no continuation.
    assert verify(full, "--after", head) == 1
    assert "BROKEN at line 1 (prev_mismatch)" in capsys.readouterr().out
    assert verify(full, "--after", GENESIS) == 0
    # The archive looks like an earlier export, but export-log never replaces it, not even with --force.
    for force in ([], ["--force"]):
        assert main(["gateway", "export-log", "--db", str(db), "-o", str(arc), *force]) == 1
        assert "error (gateway_file): %s is an archive of the store's provenance chain" % arc \
            in capsys.readouterr().err
        assert hashlib.sha256(arc.read_bytes()).hexdigest() == sha


def test_ingest_after_archive_keeps_linking_and_archiving_twice_chains_the_archives(
        tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a1, a2, live = tmp_path / "a1.jsonl", tmp_path / "a2.jsonl", tmp_path / "live.jsonl"
    assert archive(db, a1, "--keep", "1") == 0  # everything but the head entry
    assert [r[0] for r in rows(db)] == [10]
    add_reports(db, 11, 15)  # the gateway continues from the head entry left in the store
    assert archive(db, a2, "--before", "14") == 0
    assert "verify-log %s --expect-head %s --expect-count 4 --after %s" % (a2, head_of(a2), head_of(a1)) \
        in capsys.readouterr().err
    assert json.loads(a2.read_text().splitlines()[0]) == {"after": {"pos": 9, "hash": head_of(a1)}}
    add_reports(db, 16, 17)
    assert export(db, live) == 0
    assert verify(a1, "--expect-count", "9") == 0
    assert verify(a2, "--after", head_of(a1), "--expect-count", "4") == 0
    assert verify(live, "--after", head_of(a2), "--expect-count", "4") == 0
    assert [r[0] for r in rows(db, "chain_checkpoints")] == [9, 13]
    # Concatenated (checkpoint lines dropped) the parts are one whole chain from its start.
    whole = tmp_path / "whole.jsonl"
    whole.write_text("".join(line + "\n" for p in (a1, a2, live) for line in p.read_text().splitlines()
                             if not line.startswith('{"after"')))
    assert verify(whole, "--expect-count", "17", "--expect-head", head_of(live)) == 0


def test_every_entry_archived_the_store_continues_from_the_checkpoint(tmp_path: Path, db: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """archive-log keeps the head entry, but a chain emptied otherwise still continues from its checkpoint."""
    a1 = tmp_path / "a1.jsonl"
    assert archive(db, a1, "--keep", "1") == 0
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM chain")  # what an older archive of everything would leave
    conn.execute("INSERT INTO chain_checkpoints VALUES (10, ?, 1, 0, ?, 'x')", (rows(db)[0][6], "0" * 64))
    conn.commit()
    assert last_hash(conn) == (10, rows(db, "chain_checkpoints")[1][1])
    conn.close()
    live = tmp_path / "live.jsonl"
    assert export(db, live) == 0
    assert verify(live, "--after", rows(db, "chain_checkpoints")[1][1], "--expect-count", "0") == 0
    add_reports(db, 11, 12)
    assert [r[0] for r in rows(db)] == [11, 12]
    assert export(db, live) == 0
    assert verify(live, "--after", rows(db, "chain_checkpoints")[1][1], "--expect-count", "2") == 0


@pytest.mark.parametrize("case", ["exists", "empty", "store", "wal", "retention", "sqlite", "dash", "dir"])
def test_refused_outputs_delete_nothing(tmp_path: Path, db: Path, case: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    earlier = tmp_path / "earlier.jsonl"
    assert export(db, earlier) == 0  # an earlier export or archive: never replaced
    (tmp_path / "empty.jsonl").write_text("")
    (db.parent / "retention.json").write_text('{"overrides": []}\n')
    (db.parent / "reports.sqlite-wal").write_bytes(b"")
    output, reason = {"exists": (earlier, "exists"), "empty": (tmp_path / "empty.jsonl", "exists"),
                      "store": (db, "bad_path"), "wal": (db.parent / "reports.sqlite-wal", "gateway_file"),
                      "retention": (db.parent / "retention.json", "gateway_file"), "sqlite": (other, "sqlite_file"),
                      "dash": (Path("-"), "bad_path"), "dir": (tmp_path, "bad_path")}[case]
    before = rows(db)
    contents = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != "reports.sqlite-shm"}
    capsys.readouterr()
    assert archive(db, output, "--before", "5") == 1
    assert "error (%s)" % reason in capsys.readouterr().err
    assert rows(db) == before
    assert {p: p.read_bytes() for p in contents} == contents
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


def test_positions_past_the_head_or_already_archived_are_refused(tmp_path: Path, db: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.jsonl"
    assert archive(db, out, "--before", "11") == 1
    assert "error (bad_position): --before 11 is past the chain's head entry (pos 10)" in capsys.readouterr().err
    assert archive(db, out, "--keep", "10") == 1
    assert "error (nothing_to_archive)" in capsys.readouterr().err
    assert archive(db, out, "--before", "4") == 0
    assert archive(db, tmp_path / "b.jsonl", "--before", "3") == 1
    assert "nothing to archive: the store's chain holds pos 4 to 10 (the entries before were archived)" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit):
        archive(db, tmp_path / "c.jsonl", "--before", "0")
    with pytest.raises(SystemExit):
        main(["gateway", "archive-log", "--db", str(db), "--before", "3", "--keep", "2", "-o", str(out)])
    assert not (tmp_path / "b.jsonl").exists() and not (tmp_path / "c.jsonl").exists()
    assert [r[0] for r in rows(db)] == list(range(4, 11))


def test_a_running_gateway_is_refused_and_nothing_changes(tmp_path: Path, db: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = ("import sys; sys.path[:0] = %r; from pathlib import Path; from gateway.storage import ReportStore; "
            "s = ReportStore(Path(%r), gateway_id='gw1'); print('open', flush=True); sys.stdin.read()"
            % ([str(REPO)], str(db)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "open\n"
        before = rows(db)
        assert archive(db, tmp_path / "a.jsonl", "--before", "5") == 1
        err = capsys.readouterr().err
        # Named with its command line: a gateway, a backup, a restore or another archive-log may hold it.
        assert "error (in_use): report store %s is in use by another civicedge process (pid %d: %s -c import sys" \
            % (db, proc.pid, sys.executable) in err
        assert rows(db) == before and not (tmp_path / "a.jsonl").exists()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_failed_delete_leaves_a_valid_archive_and_an_untouched_store(tmp_path: Path, db: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The removal fails inside SQLite (as a crash between the file and the delete would leave things)."""
    conn = sqlite3.connect(db)
    conn.execute("CREATE TRIGGER no_delete BEFORE DELETE ON chain BEGIN SELECT RAISE(ABORT, 'disk gone'); END")
    conn.commit()
    conn.close()
    before = rows(db)
    arc = tmp_path / "a.jsonl"
    assert archive(db, arc, "--before", "6") == 1
    err = capsys.readouterr().err
    assert "error (write_failed): the archive %s is complete (5 entries" % arc.resolve() in err
    assert "disk gone" in err and "the store was left unchanged" in err
    assert rows(db) == before
    assert rows(db, "chain_checkpoints") == []
    assert verify(arc, "--expect-count", "5", "--expect-head", str(before[4][6])) == 0
    # Once the store can be written, archiving again (to a new file) completes.
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER no_delete")
    conn.commit()
    conn.close()
    assert archive(db, tmp_path / "b.jsonl", "--before", "6") == 0
    assert (tmp_path / "b.jsonl").read_bytes() == arc.read_bytes()


def test_tampering_with_the_archive_or_the_live_log_is_detected(tmp_path: Path, db: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    arc, live = tmp_path / "a.jsonl", tmp_path / "live.jsonl"
    assert archive(db, arc, "--before", "6") == 0
    head = head_of(arc)
    assert export(db, live) == 0
    capsys.readouterr()
    lines = arc.read_text().splitlines(keepends=True)
    altered = json.loads(lines[2])
    altered["digest"] = "f" * 64
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(lines[:2] + [json.dumps(altered) + "\n"] + lines[3:]))
    assert verify(bad) == 1
    assert capsys.readouterr().out.startswith("BROKEN at line 3 (hash_mismatch)")
    bad.write_text("".join(lines[:-1]))  # the archive's last entry dropped: its head no longer matches
    assert verify(bad, "--expect-head", head) == 1
    assert capsys.readouterr().out.startswith("MISMATCH")

    live_lines = live.read_text().splitlines(keepends=True)
    bad.write_text(live_lines[0] + "".join(live_lines[2:]))  # the live log's first entry removed
    assert verify(bad, "--after", head) == 1
    assert capsys.readouterr().out.startswith("BROKEN at line 2 (prev_mismatch)")
    forged = '{"after":{"pos":6,"hash":"%s"}}\n' % json.loads(live_lines[1])["hash"]
    bad.write_text(forged + "".join(live_lines[2:]))  # the same, with the checkpoint line rewritten to fit
    assert verify(bad, "--after", head) == 1
    assert capsys.readouterr().out.startswith("BROKEN at line 1 (prev_mismatch)")
    bad.write_text('{"after":{"pos":0,"hash":"%s"}}\n' % head + "".join(live_lines[1:]))
    assert verify(bad) == 1
    assert capsys.readouterr().out.startswith("BROKEN at line 1 (syntax)")
    bad.write_text("".join(live_lines[1:]) + live_lines[0])  # a checkpoint line only goes first
    assert verify(bad) == 1
    assert capsys.readouterr().out.startswith("BROKEN at line 1 (prev_mismatch)")

    # The store's oldest remaining entry removed behind archive-log's back: the export no longer continues
    # from the archive's head.
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM chain WHERE pos = 6")
    conn.commit()
    conn.close()
    assert export(db, live) == 0
    assert verify(live, "--after", head) == 1
    assert capsys.readouterr().out.startswith("BROKEN at line 1 (prev_mismatch)")


def test_a_store_from_before_the_checkpoints_table_is_archived_and_reopened(tmp_path: Path, db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE chain_checkpoints")  # as a gateway of the previous release left it
    conn.commit()
    conn.close()
    arc = tmp_path / "a.jsonl"
    assert archive(db, arc, "--before", "3") == 0
    assert [r[0] for r in rows(db, "chain_checkpoints")] == [2]
    add_reports(db, 11, 11)
    assert [r[0] for r in rows(db)] == list(range(3, 12))
    assert os.stat(db).st_uid == os.getuid()


def test_a_backup_and_restore_carry_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_env(tmp_path)  # a registry with devices in tmp_path/data/registry, as `devices add` leaves it
    data = tmp_path / "data"
    db = data / "reports.sqlite"
    add_reports(db, 1, 8)
    (data / "retention.json").write_text('{"overrides": []}\n')
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw1"\ndata_dir = "data"\n')
    arc = tmp_path / "a.jsonl"
    assert main(["gateway", "archive-log", "--config", str(cfg), "--before", "5", "-o", str(arc)]) == 0
    checkpoints = rows(db, "chain_checkpoints")
    assert main(["gateway", "backup", str(tmp_path / "bk"), "--config", str(cfg)]) == 0
    add_reports(db, 9, 10)
    assert main(["gateway", "restore", str(tmp_path / "bk"), "--config", str(cfg)]) == 0
    assert rows(db, "chain_checkpoints") == checkpoints
    assert [r[0] for r in rows(db)] == [5, 6, 7, 8]
    add_reports(db, 9, 9)  # the restored store continues its own chain from the backup's head
    live = tmp_path / "live.jsonl"
    assert export(db, live) == 0
    capsys.readouterr()
    assert verify(live, "--after", head_of(arc), "--expect-count", "5") == 0


def test_a_file_system_without_hard_links_gets_the_archive_by_rename(tmp_path: Path, db: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # what vfat says

    monkeypatch.setattr("gateway.storage.chain_archive.os.link", no_links)
    arc = tmp_path / "a.jsonl"
    assert archive(db, arc, "--before", "4") == 0
    assert verify(arc, "--expect-count", "3") == 0
    assert [r[0] for r in rows(db)] == list(range(4, 11))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "data"]
