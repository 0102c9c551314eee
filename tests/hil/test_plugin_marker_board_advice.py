"""A board name in a marker that is not found while ``./boards/NAME.toml`` exists: the advice gives the path a
marker takes (relative to the test file's directory, or absolute), not the ``--hil-board`` one (relative to the
current directory), which a marker in a subdirectory's test would not find."""

from __future__ import annotations

import re

import pytest

from hil.boards import load_board

pytest_plugins = ["pytester"]

MARKED = """
import pytest

@pytest.mark.board({ref!r})
def test_cwd(hil_board_definition):
    assert hil_board_definition.name == "sl-cwd"
"""


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("hil_board: BoardNotFoundError")]
    assert len(lines) == 1, output
    return lines[0]


def test_a_markers_board_in_the_projects_boards_folder_gets_a_path_that_works(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIVICEDGE_BOARDS", raising=False)
    (pytester.path / "boards").mkdir()
    text = load_board("streetlight-esp32").source.read_text()
    (pytester.path / "boards" / "sl-cwd.toml").write_text(re.sub(r'(?m)^name = .*$', 'name = "sl-cwd"', text))
    tests = pytester.mkdir("tests")
    test_file = tests / "test_cwd.py"
    test_file.write_text(MARKED.format(ref="sl-cwd"))
    result = pytester.runpytest("-p", "no:cacheprovider", "tests/test_cwd.py")
    result.assert_outcomes(errors=1)
    line = _error_line(result.stdout.str())
    absolute = (pytester.path / "boards" / "sl-cwd.toml").resolve()
    assert line.endswith("; boards/sl-cwd.toml exists in the current directory, but board names are looked up in the "
                         "CIVICEDGE_BOARDS directories and the boards/ shipped inside civicedge only: pass its path, "
                         "relative to the test file's directory as paths in markers are (../boards/sl-cwd.toml, or "
                         f"absolute: {absolute}), or add ./boards to CIVICEDGE_BOARDS"), line
    assert "(boards/sl-cwd.toml)" not in line  # the --hil-board advice, which fails in a marker
    # Both paths it gives work, from the project directory and from the tests' own.
    for ref in ("../boards/sl-cwd.toml", str(absolute)):
        test_file.write_text(MARKED.format(ref=ref))
        pytester.runpytest("-p", "no:cacheprovider", "tests/test_cwd.py").assert_outcomes(passed=1)
    monkeypatch.chdir(tests)
    pytester.runpytest("-p", "no:cacheprovider", "test_cwd.py").assert_outcomes(passed=1)
    # The path the --hil-board advice gave is not found in a marker.
    monkeypatch.chdir(pytester.path)
    test_file.write_text(MARKED.format(ref="boards/sl-cwd.toml"))
    pytester.runpytest("-p", "no:cacheprovider", "tests/test_cwd.py").assert_outcomes(errors=1)
