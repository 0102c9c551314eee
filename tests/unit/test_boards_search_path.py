"""CIVICEDGE_BOARDS: directories of a site's own board files, searched before the shipped boards by
every command that takes a board name, and listed with where each comes from; unknown names get a
"did you mean" everywhere (QA LOW: custom boards worked only by path, `boards list` showed only the
shipped ones, and `boards check`/`sim up --board` had no suggestion)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.resources import boards_dir
from hil.boards import BoardError, BoardNotFoundError, list_boards, load_board, suggest_board
from hil.boards.search import BOARDS_PATH_ENV, board_search_path
from hil.cli.main import main
from hil.pytest_plugin.settings import marker_board_ref

BIN = (boards_dir() / "bin-esp32c3.toml").read_text()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site directory with one board of its own, named by CIVICEDGE_BOARDS."""
    folder = tmp_path / "site-boards"
    folder.mkdir()
    (folder / "bin-xiao.toml").write_text(BIN.replace('name = "bin-esp32c3"', 'name = "bin-xiao"'))
    monkeypatch.setenv(BOARDS_PATH_ENV, str(folder))
    monkeypatch.chdir(tmp_path)  # not a name in the current directory either
    return folder


def test_a_site_board_is_found_by_name(site: Path) -> None:
    board = load_board("bin-xiao")
    assert board.name == "bin-xiao" and board.source == site / "bin-xiao.toml"
    assert {"bin-xiao", "bin-esp32c3", "streetlight-esp32"} <= set(list_boards())
    assert load_board("streetlight-esp32").source == boards_dir() / "streetlight-esp32.toml"


def test_the_pytest_marker_and_the_commands_find_it(site: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert load_board(marker_board_ref("bin-xiao", tmp_path / "test_x.py")).name == "bin-xiao"
    assert main(["boards", "check", "bin-xiao"]) == 0
    assert main(["boards", "show", "bin-xiao"]) == 0
    out = capsys.readouterr().out
    assert "ok: bin-xiao (esp32c3, bin;" in out and '"name": "bin-xiao"' in out


def test_directories_are_searched_in_order_before_the_shipped_ones(site: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    second = tmp_path / "second"
    second.mkdir()
    (second / "bin-xiao.toml").write_text(BIN.replace('name = "bin-esp32c3"', 'name = "bin-other"'))
    monkeypatch.setenv(BOARDS_PATH_ENV, os.pathsep.join([str(site), "", str(second)]))
    assert load_board("bin-xiao").name == "bin-xiao"  # the first directory wins
    assert [d.origin for d in board_search_path()] == [BOARDS_PATH_ENV, BOARDS_PATH_ENV, "shipped"]
    monkeypatch.setenv(BOARDS_PATH_ENV, os.pathsep.join([str(second), str(site)]))
    assert load_board("bin-xiao").name == "bin-other"


def test_list_says_where_each_board_comes_from(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boards", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["bin-xiao"].endswith(f"[{BOARDS_PATH_ENV}: {site}]")
    assert lines["streetlight-esp32"].endswith("[shipped]")
    assert main(["boards", "list", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert (rows["bin-xiao"]["origin"], rows["bin-xiao"]["file"]) == (BOARDS_PATH_ENV, str(site / "bin-xiao.toml"))
    assert rows["bin-esp32c3"]["origin"] == "shipped"


def test_a_directory_that_does_not_exist_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(BOARDS_PATH_ENV, str(tmp_path / "sit-boards"))
    with pytest.raises(BoardError) as info:
        load_board("bin-xiao")
    assert f"{BOARDS_PATH_ENV}: '{tmp_path / 'sit-boards'}' is not a directory" in str(info.value)
    assert main(["boards", "list"]) == 1
    assert "is not a directory" in capsys.readouterr().err
    path = tmp_path / "b.toml"
    path.write_text(BIN)
    assert load_board(path).name == "bin-esp32c3"  # a path needs no search


@pytest.mark.parametrize(("given", "meant"), [("streetlite-esp32", "streetlight-esp32"), ("bin-xiao2", "bin-xiao"),
                                              ("streetlight", "streetlight-esp32"), ("lamppost-9000", None)])
def test_unknown_names_get_a_suggestion_in_every_command(site: Path, given: str, meant: str | None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(BoardNotFoundError) as info:
        load_board(given)
    assert info.value.suggestion == meant == suggest_board(given, info.value.available)
    hint = f"did you mean {meant!r}?" if meant else None
    assert main(["boards", "check", given]) == 1
    assert main(["sim", "up", "--board", given]) == 2
    captured = capsys.readouterr()
    for text in (captured.out, captured.err):
        assert f"{given}: no such board" in text and "bin-xiao" in text and BOARDS_PATH_ENV in text
        assert (hint in text) if hint else ("did you mean" not in text)
