"""An unknown argument is reported by the subcommand it was given to, with that subcommand's usage, exit 2
(QA L4a: ``civicedge gateway run --bogus`` printed the top-level usage and ``civicedge: error: ...``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hil.cli.main import build_parser, main, selected_parser


@pytest.mark.parametrize(("argv", "command", "extra"), [
    (["gateway", "run", "--bogus"], "gateway run", "--bogus"),
    (["hil", "run", "--bogus", "x"], "hil run", "--bogus"),
    (["demo", "--bogus"], "demo", "--bogus"),
    (["gateway", "devices", "list", "--bogus"], "gateway devices list", "--bogus"),
    (["gateway", "devices", "--registry", "/tmp/r", "show", "sl-1", "--bogus=1"], "gateway devices show", "--bogus=1"),
    (["sim", "up", "--board", "streetlight-esp32", "--bogus"], "sim up", "--bogus"),
    (["boards", "list", "surplus"], "boards list", "surplus"),
    (["routes", "plan", "--bogus", "--date", "today"], "routes plan", "--bogus"),
    (["flash", "--board", "b", "--port", "p", "--bogus"], "flash", "--bogus"),
    (["hil", "list", "--bogus", "--also"], "hil list", "--bogus --also"),
    (["--bogus"], "", "--bogus"),
])
def test_the_error_names_the_subcommand_and_its_usage(argv: list[str], command: str, extra: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    prog = f"civicedge {command}".strip()
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    assert info.value.code == 2
    assert captured.err.startswith(f"usage: {prog} "), captured.err
    assert captured.err.rstrip().endswith(f"{prog}: error: unrecognized arguments: {extra}"), captured.err
    assert captured.out == ""


def test_the_console_script_reports_it_the_same_way() -> None:
    done = subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "run", "--bogus"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines()[0].startswith("usage: civicedge gateway run ")
    assert done.stderr.splitlines()[-1] == "civicedge gateway run: error: unrecognized arguments: --bogus"


@pytest.mark.parametrize("command", ["provision", "check"])
def test_json_commands_still_print_their_one_object(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--json promises one JSON object on stdout even for a usage error: an unknown option too."""
    argv = {"provision": ["provision", "--port", "p", "--id", "sl-1", "--zone", "z", "--location", "1,2",
                          "--registry", "r"],
            "check": ["check", "--port", "p", "--db", "x.sqlite"]}[command]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--json", "--bogus"])
    captured = capsys.readouterr()
    assert info.value.code == 2
    assert f"civicedge {command}: error: unrecognized arguments: --bogus" in captured.err
    record = json.loads(captured.out)
    assert record["result"] == "error" and record["exit"] == 2


def test_selected_parser_follows_the_chosen_names() -> None:
    parser = build_parser()
    args, _ = parser.parse_known_args(["gateway", "devices", "add", "--id", "a", "--kind", "bin", "--zone", "z",
                                       "--location", "1,2"])
    assert selected_parser(parser, args).prog == "civicedge gateway devices add"
    args, _ = parser.parse_known_args(["boards"])  # a group without its action: the group
    assert selected_parser(parser, args).prog == "civicedge boards"
    args, _ = parser.parse_known_args([])
    assert selected_parser(parser, args) is parser


def test_a_valid_command_line_still_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boards", "check", "streetlight-esp32", "bin-esp32c3"]) == 0
    assert capsys.readouterr().out.count("ok: ") == 2
