"""`civicedge boards`: a board file given by a path that does not exist, and a boards directory with
no definitions, are each told as such (QA L4c, L5)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import hil.boards.cli as boards_cli
from gateway.resources import boards_dir
from hil.boards import BoardFileNotFoundError, BoardNotFoundError, load_board
from hil.cli.main import main


@pytest.mark.parametrize("given", ["{tmp}/nonexist.toml", "{tmp}/sub/board", "nonexist-board.toml"])
def test_check_of_a_missing_file_says_so_and_exits_2(given: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = given.format(tmp=tmp_path)
    assert main(["boards", "check", path]) == 2
    out = capsys.readouterr().out
    assert f"error: {path}: no such file" in out
    assert "no such board" not in out  # not taken for a mistyped board name
    assert "streetlight-esp32" in out  # still says which board names exist


def test_show_of_a_missing_file_exits_2_and_of_an_unknown_name_1(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boards", "show", str(tmp_path / "gone.toml")]) == 2
    assert f"error: {tmp_path / 'gone.toml'}: no such file" in capsys.readouterr().out
    assert main(["boards", "show", "streetlite-esp32"]) == 1
    assert "streetlite-esp32: no such board" in capsys.readouterr().out


def test_check_of_an_unknown_name_stays_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boards", "check", "streetlite-esp32"]) == 1
    assert "streetlite-esp32: no such board" in capsys.readouterr().out


def test_check_exit_status_is_the_worst_of_its_boards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "gone.toml")
    # a missing file before and after an unknown name: 2 wins either way, the valid board is still checked
    assert main(["boards", "check", missing, "nosuch", "streetlight-esp32"]) == 2
    assert main(["boards", "check", "streetlight-esp32", "nosuch", missing]) == 2
    out = capsys.readouterr().out
    assert out.count("ok: streetlight-esp32") == 2 and out.count("nosuch: no such board") == 2


def test_a_missing_file_is_still_a_board_not_found_for_callers(tmp_path: Path) -> None:
    """Callers (scenario loader, pytest plugin) catch BoardNotFoundError and read .available."""
    with pytest.raises(BoardNotFoundError) as info:
        load_board(tmp_path / "nope.toml")
    assert isinstance(info.value, BoardFileNotFoundError)
    assert "streetlight-esp32" in info.value.available
    with pytest.raises(BoardNotFoundError) as by_name:
        load_board("nope")
    assert not isinstance(by_name.value, BoardFileNotFoundError)


def test_list_with_no_definitions_says_where_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "boards"
    empty.mkdir()
    monkeypatch.setattr(boards_cli, "boards_dir", lambda: empty)
    for args in (["boards", "list"], ["boards", "list", "--json"], ["boards"]):
        assert main(args) == 1
        captured = capsys.readouterr()
        assert captured.out == ""  # nothing a script would parse as a board
        assert f"no board definitions in {empty}" in captured.err


def test_list_reads_the_directory_it_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The directory the empty-list message names is the one listed: one board copied there is listed."""
    folder = tmp_path / "boards"
    folder.mkdir()
    shutil.copy(boards_dir() / "bin-esp32c3.toml", folder / "bin-esp32c3.toml")
    monkeypatch.setattr(boards_cli, "boards_dir", lambda: folder)
    assert main(["boards", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bin-esp32c3 ")
