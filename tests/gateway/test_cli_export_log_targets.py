"""``export-log -o``: a FIFO or a device is written into, never replaced by a regular file (``-o /dev/null``
as root replaced the system's /dev/null); ``-o /dev/stdout`` to a pipe works and ``-o -`` is stdout (it wrote
a file named ``-``). The output guard compares identities always (a bind mount of the data directory went
through) and refuses the side files and journals of an SQLite database it was not told about."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import make_env

from gateway.output_guard import GatewayFiles, OutputRefused, check_output
from gateway.storage import ReportRecord, ReportStore
from gateway.storage.provenance import verify_export_summary
from hil.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def record(seq: int) -> ReportRecord:
    return ReportRecord(device="bin-1", seq=seq, kind="bin", zone="north", type="win", w=1_700_000_000 + 900 * seq,
                        l=900, m={"fill": seq}, e={}, a=[], fw="1.0", received_at=1_700_000_000.0 + seq,
                        link="serial:x", digest="%064x" % seq)


@pytest.fixture
def gw(tmp_path: Path) -> Path:
    """A gateway config whose store holds 3 reports."""
    cfg = make_env(tmp_path)
    store = ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test")
    store.insert_batch([record(s) for s in range(1, 4)])
    store.close()
    return cfg


def export(cfg: Path, out: str | Path, *extra: str) -> list[str]:
    return ["gateway", "export-log", "-c", str(cfg), "-o", str(out), *extra]


def test_a_fifo_is_written_into_not_replaced(gw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert main(export(gw, fifo)) == 0
    reader.join(10)
    assert not reader.is_alive()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced by a regular file"
    assert verify_export_summary(got[0].decode().splitlines(keepends=True)).count == 3
    assert "exported 3 entries" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "export.fifo", "gateway.toml"]  # no temp file


@pytest.mark.skipif(os.geteuid() == 0, reason="as root, a failure would replace the system's /dev/null")
def test_dev_null_stays_a_character_device(gw: Path) -> None:
    before = os.stat("/dev/null")
    assert main(export(gw, "/dev/null")) == 0
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_character_device_made_here_stays_one(gw: Path, tmp_path: Path) -> None:
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # as /dev/null
    assert main(export(gw, null)) == 0
    assert stat.S_ISCHR(os.stat(null).st_mode) and os.stat(null).st_rdev == os.makedev(1, 3)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "hil.cli.main", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=60, check=False)


def test_dev_stdout_to_a_pipe(gw: Path, tmp_path: Path) -> None:
    """Was: error (write_failed): cannot write /dev/stdout: No such file or directory (realpath of a pipe)."""
    proc = _run(export(gw, "/dev/stdout"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert verify_export_summary(proc.stdout.decode().splitlines(keepends=True)).count == 3


def test_dash_is_stdout_and_dot_slash_dash_a_file(gw: Path, tmp_path: Path) -> None:
    proc = _run(export(gw, "-"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert verify_export_summary(proc.stdout.decode().splitlines(keepends=True)).count == 3
    assert not (tmp_path / "-").exists(), "-o - wrote a file named '-'"
    proc = _run(export(gw, "./-"), tmp_path)
    assert proc.returncode == 0 and proc.stdout == b"", proc.stderr
    assert verify_export_summary((tmp_path / "-").read_text().splitlines(keepends=True)).count == 3


def test_a_bind_mount_of_the_data_dir_is_the_data_dir(gw: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    (data / "retention.json").write_text('{"overrides": []}\n')
    bind = tmp_path / "bind"
    bind.mkdir()
    if subprocess.run(["mount", "--bind", str(data), str(bind)], capture_output=True, check=False).returncode:
        pytest.skip("bind mounts not permitted here")
    wal = data / "reports.sqlite-wal"
    try:
        for name in ("retention.json", "reports.sqlite-wal", "registry/keys/new.key"):
            assert main(export(gw, bind / name, "--force")) == 1, name
            err = capsys.readouterr().err
            assert err.startswith("error (gateway_file): %s is " % (bind / name)), err
        assert (data / "retention.json").read_text() == '{"overrides": []}\n'
        assert not wal.exists() or not wal.read_bytes().startswith(b"{"), "the export went into the store's -wal"
        assert not (data / "registry" / "keys" / "new.key").exists()
    finally:
        subprocess.run(["umount", str(bind)], check=True)


def test_the_keys_dir_reached_by_another_path_is_protected(tmp_path: Path) -> None:
    """A file under the keys directory bind-mounted elsewhere: found by a parent directory's identity."""
    keys = tmp_path / "data" / "registry" / "keys"
    keys.mkdir(parents=True)
    files = GatewayFiles()
    files.add_registry(keys.parent)
    bind = tmp_path / "bind"
    bind.mkdir()
    if subprocess.run(["mount", "--bind", str(keys), str(bind)], capture_output=True, check=False).returncode:
        pytest.skip("bind mounts not permitted here")
    try:
        assert files.which(bind / "sub" / "x.key") == "the device keys directory"
        assert files.which(tmp_path / "elsewhere.key") is None
    finally:
        subprocess.run(["umount", str(bind)], check=True)


def _sqlite(path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()


def test_side_files_of_another_database_are_refused_even_with_force(gw: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`export-log --db backup/reports.sqlite -o other/live.sqlite-wal --force` replaced a live store's WAL."""
    backup = tmp_path / "backup.sqlite"
    backup.write_bytes((tmp_path / "data" / "reports.sqlite").read_bytes())
    other = tmp_path / "other"
    other.mkdir()
    _sqlite(other / "live.sqlite")
    for suffix in ("-wal", "-shm", "-journal", ".lock"):
        target = other / ("live.sqlite" + suffix)
        target.write_bytes(b"held by a live store")
        assert main(["gateway", "export-log", "--db", str(backup), "-o", str(target), "--force"]) == 1, suffix
        err = capsys.readouterr().err
        assert err.startswith("error (sqlite_file): %s is the " % target) and "live.sqlite" in err, err
        assert target.read_bytes() == b"held by a live store"
        target.unlink()
        assert main(["gateway", "export-log", "--db", str(backup), "-o", str(target)]) == 1, suffix  # absent too
        assert "error (sqlite_file)" in capsys.readouterr().err and not target.exists()
    # the same names beside a file that is not a database are ordinary files
    (other / "notes").write_text("text\n")
    assert main(["gateway", "export-log", "--db", str(backup), "-o", str(other / "notes-wal")]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("magic", [b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83", bytes.fromhex("d9d505f920a163d7")])
def test_a_wal_or_journal_by_content_is_refused(tmp_path: Path, magic: bytes) -> None:
    target = tmp_path / "moved-away.bin"  # its database is not beside it
    target.write_bytes(magic + b"\0" * 40)
    with pytest.raises(OutputRefused) as refused:
        check_output(target, GatewayFiles(), force=True, previous=lambda _p: True, command="export-log", kind="x")
    assert refused.value.reason == "sqlite_file"
    assert ("write-ahead log" if magic[0] == 0x37 else "rollback journal") in refused.value.message
    assert target.read_bytes() == magic + b"\0" * 40
