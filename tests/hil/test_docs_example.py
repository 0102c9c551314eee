"""The example tests of docs/hil.md ("Writing a test") run as written, so the page cannot rot; and the
plugin refuses bad option and marker values up front (usage errors, not tracebacks or slow failures)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "hil.md"


def doc_example() -> str:
    """The first python block of docs/hil.md's "Writing a test" section, verbatim."""
    section = DOC.read_text().split("## Writing a test", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/hil.md: no python block under 'Writing a test'"
    return match.group(1)


def _ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


@pytest.mark.timeout(300)
def test_the_docs_example_tests_pass_as_written(pytester: pytest.Pytester, sim_available: None) -> None:
    _ini(pytester)
    source = doc_example()
    assert "def test_reports_arrive" in source and "def test_three_lights" in source
    pytester.makepyfile(test_doc=source)
    result = pytester.runpytest_subprocess("--hil-backend", "sim", "-p", "no:cacheprovider", timeout=280)
    result.assert_outcomes(passed=3)


def test_unknown_hil_board_is_a_usage_error(pytester: pytest.Pytester) -> None:
    _ini(pytester)
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--hil-board", "nosuch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hil-board nosuch*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("value", ["-3", "fast", "nan"])
def test_bad_hil_sim_speed_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    _ini(pytester)
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess(f"--hil-sim-speed={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hil-sim-speed*"])


@pytest.mark.parametrize("marker", ["sim(speed=-5)", "sim(speed='x')", "sim(seed=1.5)", "sim(5)"])
def test_bad_sim_marker_is_a_usage_error_at_collection(pytester: pytest.Pytester, marker: str) -> None:
    _ini(pytester)
    pytester.makepyfile(f"import pytest\n\n@pytest.mark.{marker}\ndef test_x(hil_board):\n    pass\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*sim(*"])
