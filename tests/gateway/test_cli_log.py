"""``civicedge gateway export-log`` / ``verify-log``: clear errors, atomic output, pipes, stdin, cut-off ends."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from gateway.cli import log_cmd
from gateway.storage import ReportRecord, ReportStore
from gateway.storage.provenance import GENESIS, ChainSummary, export_chain_summary
from hil.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def make_store(path: Path, reports: int) -> Path:
    """A report store holding ``reports`` reports of one bin, so as many chain entries."""
    store = ReportStore(path, gateway_id="gw1")
    store.insert_batch([
        ReportRecord(device="b1", seq=s, kind="bin", zone="north", type="win", w=1_700_000_000 + 900 * s, l=900,
                     m={"fill": 40}, e={}, a=[], fw="1.0", received_at=1_700_000_000.0, link="serial:x",
                     digest="%064x" % s)
        for s in range(1, reports + 1)
    ])
    store.close()
    return path


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_store(tmp_path / "reports.sqlite", 5)


def export(db: Path, *argv: str) -> list[str]:
    return ["gateway", "export-log", "--db", str(db), *argv]


# --- export-log --------------------------------------------------------------------------------------

def test_export_refuses_files_that_are_not_report_databases(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    text_file = tmp_path / "passwd"
    text_file.write_text("root:x:0:0:root:/root:/bin/bash\n" * 40)
    other_db = tmp_path / "other.sqlite"
    sqlite3.connect(other_db).execute("CREATE TABLE t (x)").connection.commit()
    for path in (text_file, other_db):
        assert main(export(path)) == 1
        out, err = capsys.readouterr()
        assert out == "" and "error (not_a_store): %s is not a civicedge report database" % path in err


def test_export_to_a_bad_output_path_fails_clearly(tmp_path: Path, db: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cases = [(tmp_path / "nope" / "x.jsonl", "error (write_failed): cannot write %s: No such file or directory"),
             (tmp_path, "error (bad_path): %s is a directory"),
             (db, "error (bad_path): %s is the report store itself")]
    store_bytes = db.read_bytes()
    for output, message in cases:
        assert main(export(db, "-o", str(output))) == 1
        assert message % output in capsys.readouterr().err
    assert db.read_bytes() == store_bytes
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("reports.sqlite")) == []


def test_a_failed_export_leaves_the_existing_file_untouched(tmp_path: Path, db: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "chain.jsonl"
    out.write_text("yesterday's export\n")  # not an export: replaced only with --force
    out.chmod(0o640)

    def fails_halfway(path: Path, fh: IO[str]) -> ChainSummary:
        fh.write('{"pos":1}\n')
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(log_cmd, "export_chain_summary", fails_halfway)
    assert main(export(db, "-o", str(out), "--force")) == 1
    assert "error (read_failed)" in capsys.readouterr().err
    assert out.read_text() == "yesterday's export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    monkeypatch.setattr(log_cmd, "export_chain_summary", export_chain_summary)
    assert main(export(db, "-o", str(out), "--force")) == 0
    assert len(out.read_text().splitlines()) == 5 and out.stat().st_mode & 0o777 == 0o640


def test_export_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    db = make_store(tmp_path / "reports.sqlite", 2000)  # ~550 kB: more than a pipe buffer holds
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli.main", *export(db)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 141
    assert json.loads(first)["pos"] == 1
    assert err == ""


# --- verify-log --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "line"), [(b"\xff\xfe\n", 1), (None, 3)])
def test_verify_names_the_line_that_is_not_utf8(tmp_path: Path, db: Path, content: bytes | None, line: int,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "chain.jsonl"
    if content is None:
        buf = io.StringIO()
        export_chain_summary(db, buf)
        lines = buf.getvalue().encode().splitlines(keepends=True)
        content = b"".join(lines[:2] + [b'{"device":"b\xe91"}\n'] + lines[3:])
    log.write_bytes(content)
    assert main(["gateway", "verify-log", str(log)]) == 1
    out = capsys.readouterr().out
    assert "BROKEN at line %d (syntax): line %d is not valid UTF-8" % (line, line) in out


def test_verify_names_a_line_of_absurdly_nested_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "chain.jsonl"
    log.write_text("[" * 100_000 + "\n")
    assert main(["gateway", "verify-log", str(log)]) == 1
    assert "BROKEN at line 1 (syntax): line 1 is not JSON" in capsys.readouterr().out


def test_verify_reads_stdin_for_dash(db: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    buf = io.StringIO()
    summary = export_chain_summary(db, buf)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(buf.getvalue().encode())))
    assert main(["gateway", "verify-log", "-"]) == 0
    assert capsys.readouterr().out == "OK: 5 entries, chain intact, head %s\n" % summary.head


def test_verify_prints_the_head_and_catches_a_cut_off_end(tmp_path: Path, db: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    full = tmp_path / "full.jsonl"
    assert main(export(db, "-o", str(full))) == 0
    lines = full.read_text().splitlines()
    head = json.loads(lines[-1])["hash"]
    assert capsys.readouterr().err == "exported 5 entries, head %s\n" % head
    assert main(["gateway", "verify-log", str(full), "--expect-head", head.upper(), "--expect-count", "5"]) == 0
    assert capsys.readouterr().out == "OK: 5 entries, chain intact, head %s\n" % head
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:3]) + "\n")
    cut_head = json.loads(lines[2])["hash"]
    assert main(["gateway", "verify-log", str(cut)]) == 0  # still links: only the head shows the difference
    assert capsys.readouterr().out == "OK: 3 entries, chain intact, head %s\n" % cut_head
    assert main(["gateway", "verify-log", str(cut), "--expect-head", head]) == 1
    out = capsys.readouterr().out
    assert out.startswith("MISMATCH:") and "3 entries, head %s" % cut_head in out and "expected head %s" % head in out
    assert main(["gateway", "verify-log", str(cut), "--expect-count", "5"]) == 1
    assert "expected 5 entries (entries missing at the end?)" in capsys.readouterr().out
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["gateway", "verify-log", str(empty), "--expect-count", "0", "--expect-head", GENESIS]) == 0


@pytest.mark.parametrize("argv", [["--expect-head", "abc"], ["--expect-count", "-1"], ["--expect-count", "x"]])
def test_verify_refuses_malformed_expectations(tmp_path: Path, argv: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["gateway", "verify-log", str(tmp_path / "x.jsonl"), *argv])
    assert info.value.code == 2 and "must be" in capsys.readouterr().err


def _tampered(db: Path, tmp_path: Path, line: int, change: dict[str, object]) -> Path:
    """An export of ``db`` with ``change`` applied to the JSON object of (1-based) ``line``."""
    buf = io.StringIO()
    export_chain_summary(db, buf)
    lines = buf.getvalue().splitlines()
    entry = json.loads(lines[line - 1])
    entry.update(change)
    lines[line - 1] = json.dumps(entry, separators=(",", ":"))
    out = tmp_path / "tampered.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.parametrize(("line", "change", "reason"), [
    (3, {"pos": 30}, "pos_mismatch"),          # pos is not hashed: only its run tells
    (1, {"pos": 0}, "pos_mismatch"),
    (2, {"pos": "2"}, "pos_mismatch"),
    (2, {"pos": True}, "pos_mismatch"),
    (4, {"note": "approved by x"}, "unknown_field"),
    (1, {"Device": "b9"}, "unknown_field"),
])
def test_verify_refuses_a_tampered_pos_and_extra_keys(tmp_path: Path, db: Path, line: int, change: dict[str, object],
                                                      reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The chain hashes (device, seq, gateway, digest, prev): a rewritten pos or an added key passed as intact."""
    assert main(["gateway", "verify-log", str(_tampered(db, tmp_path, line, change))]) == 1
    assert capsys.readouterr().out.startswith("BROKEN at line %d (%s): line %d " % (line, reason, line))


def test_verify_counts_positions_past_blank_lines(tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    buf = io.StringIO()
    export_chain_summary(db, buf)
    log = tmp_path / "chain.jsonl"
    log.write_text("\n" + buf.getvalue().replace("\n", "\n\n", 2))
    assert main(["gateway", "verify-log", str(log)]) == 0
    assert capsys.readouterr().out.startswith("OK: 5 entries, chain intact")


READ_ONLY_EXPORT = """mount --bind "$1" "$1" || exit 77
mount -o remount,ro,bind "$1" || exit 77
if touch "$1/probe" 2>/dev/null; then exit 77; fi
shift
exec "$@"
"""


def _on_read_only_mount(directory: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with ``directory`` bind-mounted read-only (a private mount namespace; skip where
    this system does not allow one)."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        pytest.skip("needs unshare(1) for a read-only mount")
    ns = [unshare, "-m"] if os.geteuid() == 0 else [unshare, "-r", "-m"]
    proc = subprocess.run([*ns, "sh", "-c", READ_ONLY_EXPORT, "sh", str(directory), *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode == 77 or (proc.returncode != 0 and proc.stderr.startswith("unshare:")):
        pytest.skip("no read-only bind mount here: %s" % proc.stderr.strip())
    return proc


@pytest.mark.parametrize("with_reader_files", [False, True])
def test_export_reads_a_cleanly_stopped_store_on_a_read_only_mount(tmp_path: Path, with_reader_files: bool) -> None:
    """WAL mode needs -shm even to read; on a read-only mount it cannot be made ('unable to open
    database file'). A store without -wal there is read as an immutable file."""
    store_dir = tmp_path / "backup"
    store_dir.mkdir()
    db = make_store(store_dir / "reports.sqlite", 5)
    if not with_reader_files:
        os.unlink(store_dir / "reports.sqlite.lock")  # a backup's copy: no lock file
    files = sorted(p.name for p in store_dir.iterdir())
    expected = io.StringIO()
    summary = export_chain_summary(db, expected)
    if not with_reader_files:
        assert sorted(p.name for p in store_dir.iterdir()) == files  # read immutable: nothing left beside the copy
    out = tmp_path / "chain.jsonl"
    if with_reader_files:  # what an ordinary reader (sqlite3) leaves: an empty -wal and a -shm
        conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
        conn.execute("SELECT COUNT(*) FROM chain").fetchone()
        conn.close()
        files = sorted(p.name for p in store_dir.iterdir())
        assert "reports.sqlite-shm" in files and (store_dir / "reports.sqlite-wal").stat().st_size == 0
    proc = _on_read_only_mount(store_dir, [sys.executable, "-m", "hil.cli.main", "gateway", "export-log",
                                           "--db", str(db), "-o", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "exported 5 entries, head %s\n" % summary.head
    assert out.read_text() == expected.getvalue()
    assert sorted(p.name for p in store_dir.iterdir()) == files


def test_a_store_is_read_as_immutable_only_without_a_wal_in_a_directory_not_writable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.storage import sqlite_uri

    db = make_store(tmp_path / "reports.sqlite", 1)
    assert not sqlite_uri.read_only_uri(db).endswith("immutable=1")  # writable: SQLite makes its -shm
    assert sqlite_uri.read_only_uri(db, one_shot=True).endswith("?mode=ro&immutable=1")  # no gateway holds it
    monkeypatch.setattr(sqlite_uri.os, "access", lambda path, mode: False)
    assert sqlite_uri.read_only_uri(db).endswith("?mode=ro&immutable=1")
    (tmp_path / "reports.sqlite-wal").write_bytes(b"")  # what a read-only reader leaves behind
    assert sqlite_uri.read_only_uri(db).endswith("?mode=ro&immutable=1")
    (tmp_path / "reports.sqlite-wal").write_bytes(b"\0" * 32)  # a writer's (or a killed one's) commits
    assert sqlite_uri.read_only_uri(db).endswith("?mode=ro")
