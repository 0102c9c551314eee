"""Board, scenario and stimuli files nested too deeply (``a = [[[...`` 5000 deep) or larger than any
such file: a clear error naming the file, not a RecursionError traceback or a read into memory; `boards
list` lists such a file INVALID and goes on (it ended the whole listing) (audit M7, M8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.small_files import CONFIG_MAX
from hil.boards.errors import BoardError
from hil.boards.loader import load_board
from hil.cli.main import main
from hil.scenarios import ScenarioError
from hil.scenarios.loader import load_scenario

DEEP = "a = " + "[" * 5000 + "]" * 5000 + "\n"
TOO_DEEP = "nested too deeply (arrays, tables or objects more than 64 levels inside each other)"
SCENARIO = """
name = "deep"
start = "2026-11-21T20:00:00Z"
duration = "10m"
[[boards]]
board = "streetlight-esp32"
ids = ["sl-d-1"]
link = "uart"
stimuli = "night.toml"
[expect]
reports_min = 1
"""


def _big(path: Path) -> Path:
    with path.open("wb") as f:
        f.truncate(CONFIG_MAX + 1)  # sparse: costs no disk
    return path


def test_boards_list_shows_a_deeply_nested_file_invalid_and_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "deep.toml").write_text(DEEP)
    monkeypatch.setenv("CIVICEDGE_BOARDS", str(tmp_path))
    assert main(["boards", "list"]) == 1
    out = capsys.readouterr().out
    assert f"deep: INVALID: {tmp_path / 'deep.toml'}: not valid TOML: {TOO_DEEP}" in out, out
    assert "streetlight-esp32" in out and "bin-esp32c3" in out  # the other boards are still listed


def test_boards_check_names_a_deeply_nested_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text(DEEP)
    assert main(["boards", "check", str(deep)]) == 1
    assert f"{deep}: not valid TOML: {TOO_DEEP}" in capsys.readouterr().out


def test_a_board_file_larger_than_any_board_is_refused_unread(tmp_path: Path) -> None:
    big = _big(tmp_path / "big.toml")
    with pytest.raises(BoardError) as info:
        load_board(big)
    assert str(info.value) == (f"{big}: cannot read the board definition: larger than 1 MiB, the most this file "
                               "may hold")


def test_hil_validate_names_a_deeply_nested_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text(DEEP)
    assert main(["hil", "validate", str(deep)]) == 2
    assert f"bad {deep}: {deep}: scenario file is not usable TOML: {TOO_DEEP}" in capsys.readouterr().err


def test_a_deeply_nested_stimuli_file_is_a_scenario_error(tmp_path: Path) -> None:
    (tmp_path / "night.toml").write_text(DEEP)
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    with pytest.raises(ScenarioError) as info:
        load_scenario(scenario)
    night = tmp_path / "night.toml"
    assert str(info.value) == f"boards[1]: stimuli: {night}: stimuli file is not usable TOML: {TOO_DEEP}"


def test_a_scenario_file_past_the_limit_is_refused_unread(tmp_path: Path) -> None:
    big = _big(tmp_path / "big.toml")
    with pytest.raises(ScenarioError) as info:
        load_scenario(big)
    assert str(info.value) == f"{big}: cannot read the scenario file: larger than 1 MiB, the most this file may hold"
