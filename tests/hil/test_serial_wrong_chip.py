"""The serial backend refuses a board definition for another chip than the board's, before writing anything.

A virtual bin-esp32c3 (firmware installed, as ``civicedge sim up --board bin-esp32c3 --flash DIR`` leaves
it) stands in for a real ESP32-C3. Before the fix a test with the streetlight-esp32 (ESP32) definition
replaced its firmware's /board.json with the ESP32 one and failed later with the firmware's
"cannot start: invalid pin"; ``civicedge flash --firmware-only`` refuses the same board up front.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("sim_available")]


@pytest.fixture
def c3_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running virtual ESP32-C3 bin with its own firmware and /board.json."""
    from hil.backends.sim_driver import _LoopThread
    from hil.sim.board import VirtualBoard

    loop = _LoopThread()
    board = VirtualBoard("bin-esp32c3", flash_dir=tmp_path_factory.mktemp("c3-flash"), speed=5)
    try:
        loop.run(board.start(), timeout_s=120)
        yield board
    finally:
        loop.run(board.stop(), timeout_s=60)
        loop.close()


def flash_files(board: Any) -> dict[str, bytes]:
    root = Path(board.flash_dir)
    return {"/" + p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_definition_for_another_chip_is_refused_before_anything_is_written(
        pytester: pytest.Pytester, c3_board: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    before = flash_files(c3_board)
    pytester.makepyfile("""
        def test_board(hil_board):
            pass
    """)
    result = pytester.runpytest("--hil-backend", "serial", "--hil-board", "streetlight-esp32", "--hil-port",
                                c3_board.console_path, "--hil-lease-dir", str(tmp_path_factory.mktemp("leases")),
                                "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    # The message civicedge flash --firmware-only gives for this board (hil.field.board_facts).
    result.stdout.fnmatch_lines([f"*hil_board: WrongChipError: *the board on {c3_board.console_path} is an "
                                 "ESP32-C3 (MicroPython reports *), but the board definition streetlight-esp32 "
                                 "needs ESP32; use the board definition for this board*"])
    after = flash_files(c3_board)
    assert {p: after.get(p) for p in before if p.endswith((".py", ".mpy", ".json")) and not p.startswith("/state/")} \
        == {p: b for p, b in before.items() if p.endswith((".py", ".mpy", ".json")) and not p.startswith("/state/")}
