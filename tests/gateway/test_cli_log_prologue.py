"""``export-log`` and ``archive-log`` open their store through one prologue (``log_cmd.checked_store``): both
refuse a config that does not load, a missing store and a file that is no report store with the same
messages, before any output file is made and without touching the file named as the store. They check
``-o`` the same way too (``log_cmd._target_problem``), each in its own words."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.storage import ReportRecord, ReportStore
from hil.cli.main import main

COMMANDS = {
    "export-log": ["gateway", "export-log"],
    "archive-log": ["gateway", "archive-log", "--keep", "1"],
}


def run(command: str, store: list[str], output: Path) -> int:
    return main([*COMMANDS[command], *store, "-o", str(output)])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_missing_store_is_refused_before_any_output(command: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "reports.sqlite"
    output = tmp_path / "out.jsonl"
    assert run(command, ["--db", str(db)], output) == 1
    assert capsys.readouterr().err == "error (open_failed): no report store at %s\n" % db
    assert not output.exists() and not db.exists()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_file_that_is_no_report_store_is_refused_and_kept(command: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "notes.txt"
    db.write_text("not a database\n" * 100)
    output = tmp_path / "out.jsonl"
    assert run(command, ["--db", str(db)], output) == 1
    assert capsys.readouterr().err == "error (not_a_store): %s is not a civicedge report database\n" % db
    assert not output.exists() and db.read_text() == "not a database\n" * 100


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_config_that_does_not_load_names_its_key(command: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[storage]\nnope = 1\n")
    output = tmp_path / "out.jsonl"
    assert run(command, ["--config", str(config)], output) == 1
    err = capsys.readouterr().err
    assert err.startswith("error (unknown_key) [storage.nope]: %s: unknown key 'nope' in [storage]" % config)
    assert not output.exists()


def _store(path: Path) -> Path:
    """A report store holding three chain entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = ReportStore(path, gateway_id="gw1")
    store.insert_batch([
        ReportRecord(device="b1", seq=s, kind="bin", zone="north", type="win", w=1_700_000_000 + 900 * s, l=900,
                     m={"fill": 40}, e={}, a=[], fw="1.0", received_at=1_700_000_000.0, link="serial:x",
                     digest="%064x" % s)
        for s in range(1, 4)
    ])
    store.close()
    return path


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_output_that_cannot_take_the_log_is_refused_in_the_commands_words(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the checks both commands make of -o (log_cmd._target_problem), each in its own words
    db = _store(tmp_path / "data" / "reports.sqlite")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    word = command.split("-")[0]
    cases = [
        (tmp_path, "error (bad_path): %s is a directory; give the %s a file name\n" % (tmp_path, word)),
        (db, "error (bad_path): %s is the report store itself; %s to another file\n" % (db, word)),
        (other, "error (sqlite_file): %s is an SQLite database (a report store, a registry or a copy of one?); %s "
                "never writes over a database, not even with --force: give another file name\n" % (other, command)),
    ]
    store_bytes, other_bytes = db.read_bytes(), other.read_bytes()
    for output, message in cases:
        assert run(command, ["--db", str(db)], output) == 1
        assert capsys.readouterr().err == message
    assert db.read_bytes() == store_bytes and other.read_bytes() == other_bytes
