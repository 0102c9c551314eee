"""An unknown board in a scenario file gets the same suggestion as ``boards check`` and ``--board``
(hil.boards.suggest_board): a prefix of the only board starting so is suggested too (review LOW: the
scenario loader had its own difflib lookup, which found nothing for ``bin``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.boards import list_boards, suggest_board
from hil.scenarios import UnknownBoardError, load_scenario

SCENARIO = """
name = "t"
duration = "20m"
speed = 60
start = "2026-11-21T20:00:00Z"
[[boards]]
board = "{board}"
[expect]
reports_min = 1
"""


@pytest.mark.parametrize("board", ["bin", "streetlite-esp32", "bin-esp32c3.tom"])
def test_an_unknown_board_gets_the_boards_suggestion(tmp_path: Path, board: str) -> None:
    expected = suggest_board(board, list_boards())
    assert expected is not None  # each is close to a shipped board
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(board=board))
    with pytest.raises(UnknownBoardError) as info:
        load_scenario(path)
    assert f"unknown board {board!r} (did you mean {expected!r}? boards: " in str(info.value)
