"""``gateway init PATH``: a name too long is a clean bad_path error, and ``--force`` replaces an old config
only, never a report store, a gateway file or a file that is clearly no config. Each failed before: a
traceback (ENAMETOOLONG from path.is_dir()), or rc 0 with the file replaced by the example config."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from gateway.config import EXAMPLE_CONFIG
from gateway.storage import ReportStore
from hil.cli.main import main


@pytest.fixture(autouse=True)
def _own_default_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default config's data directory (the one used without --config) is this test's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_name_too_long_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / ("a" * 300 + ".toml")
    for force in ((), ("--force",)):
        assert main(["gateway", "init", *force, str(target)]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err == "error (bad_path): cannot write %s: File name too long\n" % target


def test_force_refuses_a_report_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "data" / "reports.sqlite"
    ReportStore(db, gateway_id="gw-test").close()
    before = digest(db)
    assert main(["gateway", "init", "--force", str(db)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error (sqlite_file): %s is an SQLite database" % db), err
    assert "not even with --force" in err
    assert digest(db) == before


def test_force_refuses_the_default_gateways_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """retention.json of the data directory used without --config."""
    data = tmp_path / "xdg" / "civicedge" / "gateway"
    data.mkdir(parents=True)
    retention = data / "retention.json"
    retention.write_text("{}\n")  # refused as the gateway's file, before what it holds is looked at
    assert main(["gateway", "init", "--force", str(retention)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error (gateway_file): %s is the gateway's retention settings" % retention)
    assert retention.read_text() == "{}\n"


def test_force_refuses_the_files_beside_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The lock (empty: it would pass as an empty file) and the live WAL of a store no config names."""
    db = tmp_path / "elsewhere" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")  # open: its -wal exists
    try:
        lock = db.with_name("reports.sqlite.lock")
        lock.write_bytes(b"")
        for target, what in ((lock, "lock file of the SQLite database"), (db.with_name("reports.sqlite-wal"), "of the SQLite database")):
            before = digest(target)
            assert main(["gateway", "init", "--force", str(target)]) == 1
            out, err = capsys.readouterr()
            assert out == "" and err.startswith("error (sqlite_file): %s is the " % target) and what in err, err
            assert digest(target) == before
    finally:
        store.close()


def test_force_refuses_what_is_clearly_not_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "notes.txt": (b"remember: milk\n", "is not a config: it is not valid TOML"),
        "blob.bin": (bytes(range(256)), "is not a config: it is not valid TOML (not UTF-8 text"),
        "board.toml": (b'[board]\nname = "x"\n[pins]\nled = 2\n', "is a TOML file but not a gateway config (it has "
                                                                    "board, pins"),
        "big.toml": (b"# " + b"x" * (1 << 20) + b"\n", "cannot be a config (larger than 1 MiB"),
    }
    for name, (content, message) in cases.items():
        target = tmp_path / name
        target.write_bytes(content)
        assert main(["gateway", "init", "--force", str(target)]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("error (not_config): %s %s" % (target, message)), err
        assert "--force replaces only an old config" in err
        assert target.read_bytes() == content


def test_force_refuses_a_fifo_without_blocking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "gateway.toml"
    os.mkfifo(fifo)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(main(["gateway", "init", "--force", str(fifo)])), daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():  # it blocked opening the FIFO for writing: free it
        with open(fifo, "rb") as fh:
            fh.read()
        t.join(20)
        pytest.fail("init --force blocked on a FIFO")
    assert result == [1]
    assert capsys.readouterr().err.startswith("error (bad_path): %s is a FIFO, not a config file" % fifo)


def test_force_still_replaces_an_old_config_or_an_empty_file(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "gateway.toml"
    old.write_text('# an old config\n[gateway]\nid = "gw-old"\n[http]\nenabled = false\n')
    empty = tmp_path / "empty.toml"
    empty.write_bytes(b"")
    comments = tmp_path / "comments.toml"
    comments.write_text("# nothing set yet\n")
    for target in (old, empty, comments):
        assert main(["gateway", "init", "--force", str(target)]) == 0, capsys.readouterr().err
        assert capsys.readouterr().out == "wrote %s\n" % target
        assert target.read_text() == EXAMPLE_CONFIG
    assert main(["gateway", "init", str(old)]) == 1  # without --force: any existing file, as before
    assert "already exists (use --force to overwrite)" in capsys.readouterr().err


@pytest.mark.parametrize("place", ["registry", "registry/keys", "reports.sqlite", "retention.json"])
def test_a_new_config_is_not_written_where_a_gateway_file_belongs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], place: str) -> None:
    """Before the gateway's first start nothing is there yet: ``init`` wrote a config file where the default
    gateway's registry directory (or its store) belongs, and the gateway could then not make it."""
    target = tmp_path / "xdg" / "civicedge" / "gateway" / place
    assert main(["gateway", "init", str(target)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error (gateway_file): %s is " % target), err
    assert not os.path.lexists(target)


def test_a_new_config_beside_the_gateways_files_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "xdg" / "civicedge" / "gateway" / "gateway.toml"
    assert main(["gateway", "init", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == EXAMPLE_CONFIG
