"""pytest-embedded's per-session directory does not pile up: removed when a session left it empty."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(120)


def test_a_session_that_wrote_nothing_leaves_no_embedded_tempdir(pytester: pytest.Pytester) -> None:
    logdir = pytester.mkdir("logs")
    pytester.makepyfile("def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    # A separate process, as a user runs it; pytest-embedded is auto-loaded there.
    result = pytester.runpytest_subprocess("--root-logdir", str(logdir), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert "pytest_embedded" in pytester.runpytest_subprocess("--trace-config", "--co").stdout.str()
    leftovers = [p for p in (logdir / "pytest-embedded").glob("*")] if (logdir / "pytest-embedded").exists() else []
    assert leftovers == []


def test_a_session_directory_with_files_is_kept(pytester: pytest.Pytester) -> None:
    logdir = pytester.mkdir("logs")
    pytester.makepyfile("""
        import os

        def test_writes_a_log(session_tempdir):
            with open(os.path.join(session_tempdir, "dut.log"), "w") as fh:
                fh.write("kept")
    """)
    result = pytester.runpytest_subprocess("--root-logdir", str(logdir), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert [p.read_text() for p in (logdir / "pytest-embedded").glob("*/dut.log")] == ["kept"]
