"""`civicedge demo --streetlights/--bins`: a negative or non-integer count is refused by argparse, naming
the option and the value (QA L4b: `--streetlights -1` said "the demo needs at least one board")."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.cli.main import main


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--streetlights", "-1", "argument --streetlights: must be 0 or more boards, got '-1'"),
    ("--bins", "-3", "argument --bins: must be 0 or more boards, got '-3'"),
    ("--bins", "two", "argument --bins: must be a whole number of boards (0 or more), got 'two'"),
    ("--streetlights", "1.5", "argument --streetlights: must be a whole number of boards (0 or more), got '1.5'"),
])
def test_a_bad_count_names_option_and_value(option: str, value: str, message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    workdir = tmp_path / "demo"
    with pytest.raises(SystemExit) as info:
        main(["demo", "--workdir", str(workdir), option, value])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert message in err and err.splitlines()[0].startswith("usage: civicedge demo ")
    assert "at least one board" not in err
    assert not workdir.exists()  # refused before anything was prepared


def test_zero_of_one_kind_is_still_a_count() -> None:
    from hil.cli.main import build_parser

    args = build_parser().parse_args(["demo", "--streetlights", "0", "--bins", "4"])
    assert (args.streetlights, args.bins) == (0, 4)
