"""``export-log`` and ``archive-log`` open their store through one prologue (``log_cmd.checked_store``): both
refuse a config that does not load, a missing store and a file that is no report store with the same
messages, before any output file is made and without touching the file named as the store."""

from __future__ import annotations

from pathlib import Path

import pytest

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
