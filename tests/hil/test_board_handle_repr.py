"""A BoardHandle never shows the device key: not in repr/str, not in pytest's failure output or JUnit."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.backends.board import BoardHandle, make_identity
from hil.boards import load_board

pytest_plugins = ["pytester"]


def _handle(tmp_path: Path) -> BoardHandle:
    definition = load_board("streetlight-esp32")
    return BoardHandle(backend="sim", definition=definition, identity=make_identity(definition, device_id="sl-r-1"),
                       workdir=tmp_path, state="reporting", console_url="/dev/pts/9")


def test_repr_and_str_mask_the_key(tmp_path: Path) -> None:
    handle = _handle(tmp_path)
    key = handle.identity["key"]
    for text in (repr(handle), str(handle), f"{handle}", repr([handle]), repr({"b": handle})):
        assert key not in text
        assert "'key': '<hidden>'" in text and "sl-r-1" in text and "streetlight-esp32" in text
    assert handle.key == bytes.fromhex(key)  # the key itself is still there for the registry


def test_failing_test_output_and_junit_do_not_carry_the_key(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest
        from hil.backends.board import BoardHandle, make_identity
        from hil.boards import load_board

        @pytest.fixture
        def hil_board(tmp_path, request):  # a handle as the plugin's fixture gives it, without booting
            d = load_board("streetlight-esp32")
            h = BoardHandle(backend="sim", definition=d, identity=make_identity(d), workdir=tmp_path,
                            state="reporting")
            (request.config.rootpath / "key.txt").write_text(h.identity["key"])
            return h
    """)
    pytester.makepyfile("""
        import copy

        def test_fails(hil_board):
            board = hil_board
            assert board.state == "off", board

        def test_compared(hil_board):
            other = copy.copy(hil_board)
            other.identity = dict(hil_board.identity, key="00" * 32)
            assert hil_board == other  # pytest would diff a dataclass's fields, the identity's key too
    """)
    result = pytester.runpytest("-vvvv", "-l", "--junitxml=j.xml")
    result.assert_outcomes(failed=2)
    key = (pytester.path / "key.txt").read_text()
    assert len(key) == 64
    output = "\n".join(result.outlines + result.errlines)
    assert "'key': '<hidden>'" in output
    junit = (pytester.path / "j.xml").read_text()
    assert "&lt;hidden&gt;" in junit or "<hidden>" in junit
    assert key not in output and key not in junit


def test_a_serial_console_that_is_a_pty_is_held_like_a_virtual_board(tmp_path: Path) -> None:
    """A pty on the serial backend is a virtual board standing in for a real one (`civicedge sim up`), of unknown
    speed: the watchdog hold goes in the Ctrl-C's write and is the longest (at 300x the serial hold of 600 board
    seconds was 2 s of wall time, and the hold after a round trip came after a 0.1 s watchdog had fired)."""
    import os
    import tty

    from hil.backends.board import WATCHDOG_HOLD_MAX_MS, console_is_pty
    from hil.dut.watchdog import hold_watchdog_code

    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        pty = os.ttyname(slave)
        link = tmp_path / "console"
        link.symlink_to(pty)
        assert console_is_pty(pty) and console_is_pty(str(link))
        assert not console_is_pty("/dev/ttyUSB0") and not console_is_pty("rfc2217://rig:4000")
        definition = load_board("streetlight-esp32")
        serial = BoardHandle(backend="serial", definition=definition, identity=make_identity(definition),
                             workdir=tmp_path, console_url=pty)
        try:
            assert serial.dut.on_stop_one_write and serial.dut.on_stop == hold_watchdog_code(WATCHDOG_HOLD_MAX_MS)
        finally:
            serial.close_dut()
    finally:
        os.close(master)
        os.close(slave)
