"""The kept-awake bin the demo, the latency bench and the end-to-end tests run (hil.boards.variants)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.boards import BoardError, load_board
from hil.boards.variants import AWAKE_BIN_NAME, write_awake_bin


def test_the_awake_bin_is_the_shipped_bin_awake_under_its_own_name(tmp_path: Path) -> None:
    path = write_awake_bin(tmp_path / "boards")
    awake, shipped = load_board(path), load_board("bin-esp32c3")
    assert path.name == f"{AWAKE_BIN_NAME}.toml"
    assert awake.name == AWAKE_BIN_NAME
    assert awake.sleep.mode == "none" and shipped.sleep.mode == "deep"
    # Not the shipped name with other content, so no shipped-name warning; otherwise the same board.
    assert not awake.warnings
    assert awake.to_device_config()["io"] == shipped.to_device_config()["io"]
    assert awake.chip == shipped.chip and awake.kind == shipped.kind


def test_a_shipped_file_without_the_lines_to_rewrite_is_a_clear_error(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    boards = tmp_path / "shipped" / "boards"
    boards.mkdir(parents=True)
    (boards / "bin-esp32c3.toml").write_text('name = "bin-esp32c3"\n')  # no [sleep] mode = "deep"
    monkeypatch.setattr("gateway.resources.boards_dir", lambda: boards)
    with pytest.raises(BoardError, match="mode = \"deep\"") as err:
        write_awake_bin(tmp_path / "out")
    assert "bin-esp32c3.toml" in str(err.value)
    assert not (tmp_path / "out" / f"{AWAKE_BIN_NAME}.toml").exists()
