"""A board's name is an id (letters, digits, . _ -), and a file that reuses a shipped board's name with
other content is loaded with a warning every command shows (QA LOW: `name = "bin c3 / xiao"` was ok,
and `civicedge flash --board that.toml` printed `flashed streetlight-esp32` for other pins)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from gateway.resources import boards_dir
from hil.boards import InvalidValueError, load_board
from hil.cli.main import main

STREETLIGHT = (boards_dir() / "streetlight-esp32.toml").read_text()


def write(tmp_path: Path, text: str, name: str = "board.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("bad", ["bin c3 / xiao", "sl/1", "", "-lead", "a" * 65, "straße", "sl:1"])
def test_a_name_that_is_not_an_id_is_refused(tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, STREETLIGHT.replace('name = "streetlight-esp32"', f'name = "{bad}"'))
    with pytest.raises(InvalidValueError) as info:
        load_board(path)
    assert info.value.field == "name" and info.value.value == bad
    assert "must be ASCII letters, digits, '.', '_' or '-'" in info.value.reason  # 'straße' is refused
    assert main(["boards", "check", str(path)]) == 1
    assert "field 'name'" in capsys.readouterr().out


@pytest.mark.parametrize("good", ["sl-s3_v1.2", "x", "A1", "a" * 64])
def test_id_names_are_accepted(tmp_path: Path, good: str) -> None:
    assert load_board(write(tmp_path, STREETLIGHT.replace('name = "streetlight-esp32"', f'name = "{good}"'))).name == good


def test_a_shipped_name_on_other_pins_warns_everywhere(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, STREETLIGHT.replace("pin = 27\n", "pin = 26\n"), "that.toml")  # PIR moved
    with caplog.at_level(logging.WARNING, logger="hil.boards"):
        board = load_board(path)
    assert board.name == "streetlight-esp32" and len(board.warnings) == 1
    warning = board.warnings[0]
    assert "shipped board's" in warning and "differs from it (in io)" in warning
    assert 'name = "streetlight-esp32-yoursite"' in warning
    assert any(warning in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert main(["boards", "check", str(path)]) == 0  # valid, so still ok, but told
    out = capsys.readouterr().out
    assert "ok: streetlight-esp32" in out and f"warning: {path}: name 'streetlight-esp32'" in out


def test_flash_shows_the_warning_before_anything_is_written(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, STREETLIGHT.replace("pin = 27\n", "pin = 26\n"), "that.toml")
    master, slave = os.openpty()  # a port that exists; flash stops at the missing --micropython
    try:
        with caplog.at_level(logging.WARNING):
            status = main(["flash", "--board", str(path), "--port", os.ttyname(slave)])
    finally:
        os.close(master)
        os.close(slave)
    assert status != 0
    assert any("name 'streetlight-esp32' is a shipped board's" in r.getMessage() for r in caplog.records)


def test_a_copy_of_a_shipped_board_and_the_shipped_board_do_not_warn(tmp_path: Path) -> None:
    copy = tmp_path / "streetlight-esp32.toml"
    shutil.copy(boards_dir() / "streetlight-esp32.toml", copy)
    copy.write_text(copy.read_text().replace("# Streetlight", "# our copy of the streetlight"))  # comments differ
    assert load_board(copy).warnings == ()
    assert load_board("streetlight-esp32").warnings == ()
    assert load_board("bin-esp32c3").warnings == ()


def test_the_warning_is_logged_once_per_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A fleet of virtual boards loads one definition per board: one WARNING, not one per board."""
    path = write(tmp_path, STREETLIGHT.replace("pin = 27\n", "pin = 26\n"), "fleet.toml")
    with caplog.at_level(logging.WARNING, logger="hil.boards"):
        boards = [load_board(path) for _ in range(3)]
    assert all(b.warnings for b in boards)  # every load still carries it
    assert sum("shipped board's" in r.getMessage() for r in caplog.records) == 1
