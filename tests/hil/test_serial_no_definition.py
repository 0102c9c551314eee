"""The serial backend without --hil-board assumes no board definition (as --help and the manifest say).

Before the fix it used streetlight-esp32 all the same: ``hil_board_definition`` was streetlight-esp32,
the board got streetlight-esp32's /board.json and firmware, and a missing port was a
``NoMatchingPortError: streetlight-esp32: ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(300)

TESTS = """
    def test_board(hil_board):
        pass

    def test_definition(hil_board_definition):
        pass
"""


def test_a_board_without_a_definition_errors_before_any_port_is_touched(pytester: pytest.Pytester,
                                                                        tmp_path: Path) -> None:
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("--hil-backend", "serial", "--hil-port", "/dev/ttyNOPE0", "--hil-lease-dir",
                                str(tmp_path / "leases"), "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    # Both tests (hil_board gets its definition from hil_board_definition).
    result.stdout.fnmatch_lines(["hil_board_definition: no board definition for the board on --hil-port /dev/ttyNOPE0: "
                                 "the serial backend assumes none; name the one it was flashed with (civicedge "
                                 "flash --board NAME) with --hil-board NAME or @pytest.mark.board(NAME) "
                                 "(boards: *bin-esp32c3*streetlight-esp32*)"] * 2, consecutive=False)
    assert "NoMatchingPortError" not in result.stdout.str()
    assert not list((tmp_path / "leases").glob("*.lease")), "a board was leased"


def test_the_help_and_manifest_say_the_same(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.requires("adc")
        def test_adc(hil_board):
            pass
    """)
    help_text = " ".join(pytester.runpytest("--help").stdout.str().split())
    assert "on the serial backend none: requires(...) assumes only the console, and a test using a board errors " \
           "until its definition is named here or with @pytest.mark.board(NAME)" in help_text
    result = pytester.runpytest("--hil-backend", "serial", "--hil-port", "/dev/ttyNOPE0", "-rs", "-p",
                                "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*backend 'serial' lacks adc (has console: without a board definition only the "
                                 "console of a real board is assumed*"])


@pytest.fixture
def streetlight(tmp_path_factory: pytest.TempPathFactory, sim_available: None) -> Iterator[Any]:
    """A running virtual streetlight with its firmware and /board.json, as `civicedge sim up --flash DIR` leaves it."""
    from hil.backends.sim_driver import _LoopThread
    from hil.sim.board import VirtualBoard

    loop = _LoopThread()
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path_factory.mktemp("sl-flash"), speed=5)
    try:
        loop.run(board.start(), timeout_s=120)
        yield board
    finally:
        loop.run(board.stop(), timeout_s=60)
        loop.close()


def test_nothing_is_written_to_a_board_without_a_definition(pytester: pytest.Pytester, streetlight: Any,
                                                            tmp_path: Path) -> None:
    flash = Path(streetlight.flash_dir)
    before = {p: p.read_bytes() for p in flash.rglob("*") if p.is_file() and p.suffix in (".py", ".mpy", ".json")}
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("--hil-backend", "serial", "--hil-port", streetlight.console_path, "--hil-lease-dir",
                                str(tmp_path / "leases"), "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([f"hil_board_definition: no board definition for the board on --hil-port "
                                 f"{streetlight.console_path}: *"])
    after = {p: p.read_bytes() for p in flash.rglob("*") if p.is_file() and p.suffix in (".py", ".mpy", ".json")}
    assert after == before
    assert not (flash / "identity.json").exists(), "a test identity was written"
