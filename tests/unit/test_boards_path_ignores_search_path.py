"""Loading a board by path never looks at CIVICEDGE_BOARDS (docs/boards.md): a missing file is reported as a
missing file even when CIVICEDGE_BOARDS names no directory (review LOW: the search path was built before the
argument was known to be a path, so ``--board ./missing.toml`` reported the variable's error)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.boards import BoardError, BoardFileNotFoundError, load_board
from hil.boards.search import BOARDS_PATH_ENV
from hil.cli.main import main


@pytest.fixture
def bad_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(BOARDS_PATH_ENV, str(tmp_path / "site-bords"))  # a typo: no such directory
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_missing_path_is_a_missing_file_whatever_civicedge_boards_says(bad_env: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(BoardFileNotFoundError) as info:
        load_board("./missing.toml")
    assert info.value.source == "./missing.toml" and "no such file" in str(info.value)
    assert {"bin-esp32c3", "streetlight-esp32"} <= set(info.value.available)  # the shipped ones, still listed
    assert BOARDS_PATH_ENV not in str(info.value)
    assert main(["boards", "check", "./missing.toml"]) == 2
    assert "no such file" in capsys.readouterr().out


def test_a_name_still_reports_the_bad_variable(bad_env: Path) -> None:
    with pytest.raises(BoardError, match=f"^{BOARDS_PATH_ENV}: .*site-bords' is not a directory"):
        load_board("streetlight-esp32")
