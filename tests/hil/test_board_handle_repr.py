"""A BoardHandle never shows the device key: not in repr/str, not in pytest's failure output or JUnit."""

from __future__ import annotations

import json
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


def test_only_a_registered_virtual_console_is_held_like_a_virtual_board(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A virtual board on the serial backend (`civicedge sim up`, which records its console) is of unknown speed:
    the watchdog hold goes in the Ctrl-C's write and is the longest (at 300x the serial hold of 600 board seconds
    was 2 s of wall time). Any other pty may be a real board behind socat/ser2net: before the fix every pty got
    the 24.8-day hold and the one-write entry an ESP32's console buffer can overflow with."""
    import os
    import subprocess
    import sys
    import tty

    from hil.backends.board import WATCHDOG_HOLD_MAX_MS, console_is_virtual, watchdog_hold_ms
    from hil.dut.watchdog import hold_watchdog_code
    from hil.sim import console_registry

    monkeypatch.setenv(console_registry.ENV_DIR, str(tmp_path / "run"))
    master, slave = os.openpty()
    tty.setraw(slave)
    definition = load_board("streetlight-esp32")

    def dut_of(url: str) -> tuple[bool, str | None]:
        handle = BoardHandle(backend="serial", definition=definition, identity=make_identity(definition),
                             workdir=tmp_path, console_url=url)
        try:
            return handle.dut.on_stop_one_write, handle.dut.on_stop
        finally:
            handle.close_dut()

    try:
        pty = os.ttyname(slave)
        link = tmp_path / "console"
        link.symlink_to(pty)
        # A pty nobody registered: a real board's treatment.
        assert not console_is_virtual(pty)
        assert dut_of(pty) == (False, hold_watchdog_code(watchdog_hold_ms(1.0)))
        # An entry of a process that is gone is stale: ignored (and removed).
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
        stale = console_registry.registry_dir() / f"{dead.stdout.strip()}-x.json"
        stale.parent.mkdir(parents=True)
        stale.write_text(json.dumps({"path": os.path.realpath(pty), "pid": int(dead.stdout)}))
        assert not console_is_virtual(pty) and not stale.exists()
        # Registered by the process serving it: virtual, through a link too.
        entry = console_registry.register(pty)
        assert entry is not None and console_is_virtual(pty) and console_is_virtual(str(link))
        assert not console_is_virtual("/dev/ttyUSB0") and not console_is_virtual("rfc2217://rig:4000")
        assert dut_of(pty) == (True, hold_watchdog_code(WATCHDOG_HOLD_MAX_MS))
        console_registry.unregister(pty)
        assert not console_is_virtual(pty)
    finally:
        os.close(master)
        os.close(slave)


def test_a_virtual_board_registers_its_console_while_it_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim_available: None) -> None:
    from hil.backends.board import console_is_virtual
    from hil.backends.sim_driver import _LoopThread
    from hil.sim import console_registry
    from hil.sim.board import VirtualBoard

    monkeypatch.setenv(console_registry.ENV_DIR, str(tmp_path / "run"))
    loop = _LoopThread()
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", install=False, speed=300)
    try:
        loop.run(board.start(), timeout_s=120)
        console = board.console_path
        assert console_is_virtual(console)
    finally:
        loop.run(board.stop(), timeout_s=60)
        loop.close()
    assert not console_is_virtual(console)
