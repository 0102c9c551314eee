"""`civicedge gateway run -v` works as docs/gateway.md writes it (it was "unrecognized arguments: -v")."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.cli.main import main


@pytest.fixture
def root_level() -> Iterator[logging.Logger]:
    """The root logger; the levels main() sets (root, civicedge's loggers) are restored afterwards."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in ("gateway", "hil", "bench", "__main__"))]
    saved = [lg.level for lg in loggers]
    loggers[0].setLevel(logging.WARNING)
    yield loggers[0]
    for lg, level in zip(loggers, saved):
        lg.setLevel(level)


@pytest.mark.parametrize(
    ("before", "after", "level"),
    [
        ([], [], logging.WARNING),
        ([], ["-v"], logging.INFO),
        ([], ["--verbose"], logging.INFO),
        ([], ["-vv"], logging.DEBUG),
        (["-v"], ["-v"], logging.DEBUG),  # they add up
    ],
)
def test_verbose_after_gateway_run(tmp_path: Path, root_level: logging.Logger, capsys: pytest.CaptureFixture[str],
                                   before: list[str], after: list[str], level: int) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text("[http]\nenabled = false\n")
    assert main([*before, "gateway", "run", "--config", str(cfg), *after, "--check"]) == 0
    assert "config OK" in capsys.readouterr().out
    # civicedge's own loggers get the detail (-vv: debug); the libraries under them stay at WARNING
    assert logging.getLogger("gateway.service").getEffectiveLevel() == level
    assert logging.getLogger("hil.sim.radio.central").getEffectiveLevel() == level
    assert logging.getLogger("bumble.host").getEffectiveLevel() == logging.WARNING
