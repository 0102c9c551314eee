"""A file of the board search path answers to its file name: one not named after its board is loaded with
a warning, and a CIVICEDGE_BOARDS file named like a shipped board says it hides it (review MEDIUM: a site
streetlight-esp32.toml with name = "sl-site" took over `--board streetlight-esp32`, `boards check` said
`ok: sl-site` and `boards list` hid the shipped board, all without a word)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gateway.resources import boards_dir
from hil.boards import load_board
from hil.boards.search import BOARDS_PATH_ENV
from hil.cli.main import main

STREETLIGHT = (boards_dir() / "streetlight-esp32.toml").read_text()
BIN = (boards_dir() / "bin-esp32c3.toml").read_text()
HIDES = "instead of the shipped board 'streetlight-esp32', which this file hides"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site-boards"
    folder.mkdir()
    (folder / "streetlight-esp32.toml").write_text(
        STREETLIGHT.replace('name = "streetlight-esp32"', 'name = "sl-site"').replace("pin = 27\n", "pin = 26\n"))
    monkeypatch.setenv(BOARDS_PATH_ENV, str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


def test_a_site_file_taking_a_shipped_file_name_warns(site: Path, caplog: pytest.LogCaptureFixture,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.WARNING, logger="hil.boards"):
        board = load_board("streetlight-esp32")
    assert board.name == "sl-site" and board.source == site / "streetlight-esp32.toml"
    [warning] = board.warnings
    assert warning == ("file streetlight-esp32.toml holds board 'sl-site': names are looked up as file names, so "
                       f"--board streetlight-esp32 loads 'sl-site' {HIDES}, and --board sl-site does not find it; "
                       "rename the file sl-site.toml")
    assert any(warning in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert main(["boards", "check", "streetlight-esp32"]) == 0
    out = capsys.readouterr().out
    assert "ok: sl-site" in out and HIDES in out
    assert main(["boards", "check", str(site / "streetlight-esp32.toml")]) == 0  # by path too: it is a site file
    assert HIDES in capsys.readouterr().out
    main(["boards", "list"])
    assert HIDES in capsys.readouterr().out


def test_a_site_file_not_named_after_its_board_warns(site: Path) -> None:
    (site / "bin-xiao.toml").write_text(BIN.replace('name = "bin-esp32c3"', 'name = "bin-other"'))
    [warning] = load_board("bin-xiao").warnings
    assert warning.startswith("file bin-xiao.toml holds board 'bin-other'") and "hides" not in warning


def test_files_named_after_their_board_and_files_outside_the_path_do_not_warn(site: Path, tmp_path: Path) -> None:
    (site / "sl-own.toml").write_text(STREETLIGHT.replace('name = "streetlight-esp32"', 'name = "sl-own"'))
    assert load_board("sl-own").warnings == ()
    assert load_board("bin-esp32c3").warnings == ()
    elsewhere = tmp_path / "variant.toml"  # by path, outside the search path: its file name is never looked up
    elsewhere.write_text(STREETLIGHT.replace('name = "streetlight-esp32"', 'name = "sl-own"'))
    assert load_board(elsewhere).warnings == ()


def test_boards_list_names_a_board_alike_in_text_and_json(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Text and --json both show the board's name; the file-name warning says what --board takes."""
    (site / "bin-xiao.toml").write_text(BIN.replace('name = "bin-esp32c3"', 'name = "bin-other"'))
    main(["boards", "list"])
    lines = capsys.readouterr().out.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith(("bin-other ", "bin-xiao ")))
    assert lines[row].split()[0] == "bin-other"
    assert lines[row + 1].startswith("  warning: file bin-xiao.toml holds board 'bin-other'")
    main(["boards", "list", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [other] = [r for r in rows if r["file"] == str(site / "bin-xiao.toml")]
    assert other["name"] == "bin-other" and other["warnings"][0].startswith("file bin-xiao.toml holds")
