"""QA: ``civicedge provision ... -v`` said "unrecognized arguments: -v": the top level's -v worked only
before the subcommand. Every subcommand takes it now, at any depth, and counts add up."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from hil.cli.main import build_parser, parse_command_line, verbosity


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.append(((*path, name), child))
                found += _subcommands(child, (*path, name))
    return found


def test_every_subcommand_takes_the_top_levels_verbose_option() -> None:
    subcommands = _subcommands(build_parser())
    assert len(subcommands) > 20
    without = [" ".join(path) for path, parser in subcommands if parser.get_default("missing_extra") is None
               and not any({"-v", "--verbose"} <= set(a.option_strings) for a in parser._actions)]
    assert without == []


@pytest.mark.parametrize(("argv", "expected"), [
    (["-v", "boards", "list"], 1),
    (["boards", "list", "-v"], 1),
    (["boards", "list", "--verbose", "-vv"], 3),
    (["-v", "gateway", "devices", "list", "-vv"], 3),
    (["gateway", "-v", "devices", "-v", "list", "-v"], 3),
    (["provision", "--port", "P", "--id", "sl-1", "--zone", "c", "--location", "1,2", "--registry", "R", "-v"], 1),
    (["boards", "list"], 0),
])
def test_counts_before_and_after_the_subcommand_add_up(argv: list[str], expected: int) -> None:
    assert verbosity(parse_command_line(build_parser(), argv)) == expected


def test_gateway_run_keeps_its_own_verbose_option() -> None:
    args = parse_command_line(build_parser(), ["-v", "gateway", "run", "--config", "g.toml", "-vv"])
    assert (verbosity(args), args.run_verbose) == (1, 2)


def test_provision_logs_at_debug_with_vv_after_the_subcommand(tmp_path: Path) -> None:
    missing = str(tmp_path / "ttyUSB9")
    result = subprocess.run(
        [sys.executable, "-m", "hil.cli.main", "provision", "--port", missing, "--id", "sl-1", "--zone", "centre",
         "--location", "52.37,4.89", "--registry", str(tmp_path), "-vv"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "unrecognized arguments" not in result.stderr
    assert f"error: serial port {missing} does not exist" in result.stderr, result.stderr
    assert "DEBUG hil.field.cli_common: failed: PortNotFoundError" in result.stderr, result.stderr
