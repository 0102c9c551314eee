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
