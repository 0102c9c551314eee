"""pytest-embedded's serial service attached to a virtual board's console pty."""

from __future__ import annotations

from typing import Any

import pytest

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(180)


def test_pytest_embedded_serial_dut_expect_on_virtual_board(pytester: pytest.Pytester,
                                                           blank_virtual_board: Any) -> None:
    pytester.makepyfile("""
        def test_console(dut):
            # Ctrl-C, then Enter: the friendly REPL prompt, like on a board freshly opened.
            dut.write("\\r\\x03\\r")
            dut.expect(">>> ", timeout=30)
            dut.write("import sys; print('civic', 6 * 7, sys.implementation.name)\\r")
            dut.expect(r"civic 42 micropython", timeout=30)
            dut.write("raise ValueError('from the board')\\r")
            dut.expect(r"ValueError: from the board", timeout=30)
    """)
    # In a separate process: pytest-embedded owns the `dut` fixture and its serial redirect thread.
    # --root-logdir: its logs (kept, they hold files) go to pytester's directory, not the system temp.
    logdir = pytester.mkdir("embedded-logs")
    result = pytester.runpytest_subprocess("--embedded-services", "serial", "--port", blank_virtual_board.console_path,
                                           "--root-logdir", str(logdir), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert list(logdir.glob("pytest-embedded/*/test_console/*.log"))  # the dut's log is kept for its users
