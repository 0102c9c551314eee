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


@pytest.mark.timeout(300)
def test_the_docs_example_tests_pass_as_written(pytester: pytest.Pytester, sim_available: None) -> None:
    source = doc_example()
    assert "def test_reports_arrive" in source and "def test_three_lights" in source
    pytester.makepyfile(test_doc=source)
    # No ini file: an integrator's project needs no configuration, and sees no warning.
    assert not list(pytester.path.glob("*.ini")) and not list(pytester.path.glob("*.toml"))
    result = pytester.runpytest_subprocess("--hil-backend", "sim", "-p", "no:cacheprovider", timeout=280)
    result.assert_outcomes(passed=3)
    output = result.stdout.str() + result.stderr.str()
    assert "Warning" not in output, output


ASYNC_TESTS = """
import pytest_asyncio

@pytest_asyncio.fixture(scope="session")
async def shared():
    return 42

async def test_uses_a_session_scoped_async_fixture(shared):
    assert shared == 42
"""


def test_no_pytest_asyncio_loop_scope_warning_and_its_behaviour_is_kept(pytester: pytest.Pytester) -> None:
    """pytest-asyncio warns in every run while asyncio_default_fixture_loop_scope is unset; the plugin
    sets it to "fixture-scope" (what unset means), so a session-scoped async fixture still works."""
    pytester.makepyfile(ASYNC_TESTS)
    result = pytester.runpytest_subprocess("-o", "asyncio_mode=auto", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    output = result.stdout.str() + result.stderr.str()
    assert "is unset" not in output and "PytestDeprecationWarning" not in output, output
    result.stdout.fnmatch_lines(["asyncio: *asyncio_default_fixture_loop_scope=fixture-scope*"])


FUTURE_ASYNCIO = """
from pytest_asyncio import plugin

# Stands in for a pytest-asyncio release where unset means "function" (loaded before any
# pytest_configure); the real warning text is kept as the plugin's only sign of what unset means.
plugin._DEFAULT_FIXTURE_LOOP_SCOPE_UNSET = (
    'The configuration option "asyncio_default_fixture_loop_scope" is unset. The event loop scope for '
    'asynchronous fixtures now defaults to "function" scope.')
"""


def test_a_pytest_asyncio_where_unset_may_mean_function_is_not_pinned(pytester: pytest.Pytester) -> None:
    """Only while pytest-asyncio's unset warning says unset means the fixture scope does the plugin
    set "fixture-scope"; a release that says otherwise keeps its own default and its warning."""
    pytester.makeconftest(FUTURE_ASYNCIO)
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["asyncio: *asyncio_default_fixture_loop_scope=None*"])
    result.stderr.fnmatch_lines(["*PytestDeprecationWarning: *now defaults to \"function\" scope*"])


def test_a_projects_own_asyncio_loop_scope_is_kept(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = module\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["asyncio: *asyncio_default_fixture_loop_scope=module*"])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=class")
    result.stdout.fnmatch_lines(["asyncio: *asyncio_default_fixture_loop_scope=class*"])


def test_unknown_hil_board_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--hil-board", "nosuch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hil-board nosuch*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("value", ["-3", "fast", "nan"])
def test_bad_hil_sim_speed_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess(f"--hil-sim-speed={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hil-sim-speed*"])


@pytest.mark.parametrize("marker", ["sim(speed=-5)", "sim(speed='x')", "sim(seed=1.5)", "sim(5)",
                                    "sim(start='yesterday')", "sim(start='2031-03-04T05:06:07')",
                                    "sim(start='2020-01-01T00:00:00Z')", "sim(start=1930000000)"])
def test_bad_sim_marker_is_a_usage_error_at_collection(pytester: pytest.Pytester, marker: str) -> None:
    pytester.makepyfile(f"import pytest\n\n@pytest.mark.{marker}\ndef test_x(hil_board):\n    pass\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*sim(*"])
