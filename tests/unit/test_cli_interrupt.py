"""Ctrl-C before a command runs (while its modules are imported) exits 130 without a traceback."""

from __future__ import annotations

import pytest

from hil.cli import main as cli


def test_ctrl_c_while_the_parser_is_built_exits_130(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["hil", "run", "x.toml"]) == 130
    assert "Traceback" not in capsys.readouterr().err
