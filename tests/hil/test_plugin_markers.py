"""board(...)/fleet(...) markers: paths relative to the test file, one-line errors for typos."""

from __future__ import annotations

import shutil

import pytest

from hil.boards import load_board

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(120)


def _error_lines(out: str, test: str) -> list[str]:
    """The lines pytest prints between ``ERROR at setup of <test>`` and the next section."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if f"ERROR at setup of {test}" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(("=", "_")))
    return [line for line in lines[start + 1:end] if line.strip()]


def test_a_board_path_in_a_marker_is_relative_to_the_test_file(pytester: pytest.Pytester) -> None:
    """Run from the project root, a test in suite/ names suite/boards/my-bin.toml as boards/my-bin.toml,
    as a scenario file names its boards (this looked in the current directory and did not find it)."""
    suite = pytester.mkpydir("suite")
    (suite / "boards").mkdir()
    shutil.copy(load_board("bin-esp32c3").source, suite / "boards" / "my-bin.toml")
    (suite / "test_paths.py").write_text("""
import pytest

@pytest.mark.board("boards/my-bin.toml")
def test_board_path(hil_board_definition):
    assert hil_board_definition.source.name == "my-bin.toml"
    assert hil_board_definition.source.parent.parent.name == "suite"

@pytest.mark.board("boards/my-bin.toml")
@pytest.mark.requires("uart")
def test_requires_reads_the_board_file():
    pass

@pytest.mark.fleet(**{"boards/my-bin.toml": 1})
@pytest.mark.requires("ble")
def test_fleet_path():
    pass
""")
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*test_paths.py:9: board 'bin-esp32c3' lacks uart (*from its definition "
                                 "my-bin.toml)"])


@pytest.mark.parametrize("marker, fixture, line", [
    ("board('streetlite-esp32')", "hil_board_definition",
     "hil_board: BoardNotFoundError: @pytest.mark.board('streetlite-esp32'): no such board 'streetlite-esp32' "
     "(did you mean 'streetlight-esp32'? boards: bin-esp32c3, *streetlight-esp32*)"),
    ("fleet(streetlight=2)", "hil_fleet",
     "hil_fleet: BoardNotFoundError: @pytest.mark.fleet(streetlight=2): no such board 'streetlight' "
     "(did you mean 'streetlight-esp32'? boards: *)"),
    ("board('boards/nope.toml')", "hil_board",
     "hil_board: BoardFileNotFoundError: @pytest.mark.board('boards/nope.toml'): no board file */boards/nope.toml "
     "(a path in a marker is relative to the test file's directory); boards by name: *"),
    ("board('my-light.toml')", "hil_board",
     "hil_board: Board*NotFoundError: @pytest.mark.board('my-light.toml'): no board file my-light.toml (looked for "
     "*/my-light.toml next to the test, */my-light.toml in the current directory, */boards/my-light.toml); "
     "boards by name: *bin-esp32c3*"),
    ("board('lamppost-9000')\n@pytest.mark.requires('uart')", "hil_board",
     "requires: BoardNotFoundError: @pytest.mark.board('lamppost-9000'): no such board 'lamppost-9000' (boards: *)"),
])
def test_a_board_typo_in_a_marker_errors_in_one_line(pytester: pytest.Pytester, marker: str, fixture: str,
                                                     line: str) -> None:
    """docs/hil.md promises one line naming the fixture and the error, not a traceback through the plugin."""
    pytester.makepyfile(f"""
import pytest

@pytest.mark.{marker}
def test_typo({fixture}):
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "Traceback" not in out and "fixtures.py" not in out and "direct cause" not in out, out
    lines = _error_lines(out, "test_typo")
    assert len(lines) == 1, out
    result.stdout.fnmatch_lines([line])
