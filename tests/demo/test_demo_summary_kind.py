"""The demo summary labels a board with its definition's kind (QA: every board that was not a
streetlight was labelled "bin", an air-quality sensor included)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from hil.demo.summary import read_summary


def test_each_board_is_labelled_with_the_kind_of_its_definition(tmp_path: Path) -> None:
    boards = [SimpleNamespace(device_id="air-001", name="air-esp32", config={"kind": "air"}, data_path="/dev/pts/9"),
              SimpleNamespace(device_id="bin-001", name="bin-esp32c3", config={"kind": "bin"}, data_path=None)]
    summary = read_summary(tmp_path / "absent.sqlite", boards=boards)
    assert [(r.device, r.kind, r.link) for r in summary.rows] == [("air-001", "air", "uart"), ("bin-001", "bin", "ble")]
