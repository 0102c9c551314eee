"""Every ``civicedge`` command and subcommand says in ``--help`` what it does, and every option with a
default states it (QA L3: flash, provision, check, sim, routes, boards, hil list/validate showed only
their usage and options).

The commands are found by walking the parser ``hil.cli.main.build_parser`` builds, so a command added
later is held to the same rule.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from hil.cli.main import build_parser, main


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, child in action.choices.items():
                if id(child) not in seen:  # an alias maps to the same parser
                    seen.add(id(child))
                    found.update(_walk(child, path + (name,)))
    return found


COMMANDS = _walk(build_parser())
NAMES = sorted(" ".join(path) for path in COMMANDS if path)

# What the QA pass listed, and the groups it asked to be checked too: the walk must reach them all.
QA_LISTED = {"flash", "provision", "check", "sim", "sim up", "sim fleet", "routes", "routes plan", "boards",
             "boards list", "boards show", "boards check", "hil", "hil run", "hil list", "hil validate", "demo",
             "gateway", "gateway run", "gateway init", "gateway devices", "gateway devices add",
             "gateway devices list", "gateway export-log", "gateway verify-log"}


def _options_with_defaults() -> list[tuple[str, str]]:
    out = []
    for path, parser in COMMANDS.items():
        for action in parser._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
                continue
            out.append((" ".join(path) or "civicedge", action.option_strings[-1]))
    return out


OPTIONS_WITH_DEFAULTS = _options_with_defaults()


def _action(command: str, option: str) -> tuple[argparse.ArgumentParser, argparse.Action]:
    parser = COMMANDS[() if command == "civicedge" else tuple(command.split())]
    return parser, next(a for a in parser._actions if option in a.option_strings)


def _renderings(value: object) -> set[str]:
    """How a default may be written in a help text: 30.0 as 30, a Path as its text."""
    texts = {str(value)}
    if isinstance(value, float):
        texts.add(f"{value:g}")
    return texts


def test_the_walk_reaches_every_command_the_qa_listed() -> None:
    assert QA_LISTED <= set(NAMES), QA_LISTED - set(NAMES)
    # ... and enough options with a default to check for the check below not to be an empty loop
    assert len(OPTIONS_WITH_DEFAULTS) >= 15, OPTIONS_WITH_DEFAULTS


@pytest.mark.parametrize("name", NAMES)
def test_help_describes_the_command(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = COMMANDS[tuple(name.split())]
    description = parser.description or ""
    assert len(description.split()) >= 8, f"civicedge {name} --help has no description of what it does"
    with pytest.raises(SystemExit) as info:  # what a user runs, not only what the parser holds
        main([*name.split(), "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert out.startswith(f"usage: civicedge {name} ")
    first_line = description.strip().splitlines()[0]
    assert " ".join(first_line.split()[:6]) in " ".join(out.split()), out


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    """The subcommands action of ``parser`` (a command group), or None for a leaf command."""
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


# the command groups (civicedge itself, gateway, gateway devices, ...): those that have subcommands
GROUPS = sorted(" ".join(path) or "civicedge" for path, parser in COMMANDS.items() if _subcommands(parser))


def test_the_walk_finds_the_command_groups() -> None:
    # civicedge, sim, hil, gateway, gateway devices, routes, boards: the parametrization below is not empty
    assert len(GROUPS) >= 7, GROUPS
    assert {"civicedge", "gateway", "gateway devices"} <= set(GROUPS), GROUPS


@pytest.mark.parametrize("name", GROUPS)
def test_every_subcommand_is_listed_with_a_summary(name: str) -> None:
    action = _subcommands(COMMANDS[() if name == "civicedge" else tuple(name.split())])
    assert action is not None
    listed = [choice.dest for choice in action._choices_actions]
    assert listed, f"civicedge {name} --help lists no subcommand"
    missing = [dest for dest, choice in zip(listed, action._choices_actions) if not choice.help]
    assert missing == [], f"civicedge {name} --help lists {missing} without a summary"


@pytest.mark.parametrize(("command", "option"), OPTIONS_WITH_DEFAULTS)
def test_an_option_with_a_default_states_it(command: str, option: str) -> None:
    parser, action = _action(command, option)
    text = " ".join(parser._get_formatter()._expand_help(action).split())  # %(default)s expanded, as shown
    if isinstance(action, argparse._CountAction) and action.default == 0:  # -v: 0 is "not given", said in words
        assert re.search(r"\(default: \w", text), f"{command} {option}: help {text!r} does not say what it is without"
        return
    stated = False
    for match in re.finditer(r"default", text, re.IGNORECASE):
        near = text[max(0, match.start() - 30):match.end() + 40]
        if any(re.search(r"(?<![\w.])%s(?![\w])" % re.escape(v), near) for v in _renderings(action.default)):
            stated = True
    assert stated, f"{command} {option}: help {text!r} does not state its default {action.default!r}"


@pytest.mark.parametrize("command", ["sim up", "sim fleet"])
def test_sim_start_says_when_the_virtual_clock_starts_without_it(command: str) -> None:
    parser, action = _action(command, "--start")
    text = " ".join(parser._get_formatter()._expand_help(action).split())
    assert "default: " in text and "wall clock now" in text, text


def test_sim_fleet_id_prefix_says_what_ids_are_without_it() -> None:
    parser, action = _action("sim fleet", "--id-prefix")
    assert action.default == "vb"
    assert "default vb: vb-0001" in " ".join(parser._get_formatter()._expand_help(action).split())


def test_the_stated_default_is_the_one_used() -> None:
    """The help says --id-prefix vb, --seed 7 and --workdir var/demo: what the parser gives without them."""
    parser = build_parser()
    fleet = parser.parse_args(["sim", "fleet", "--board", "bin-esp32c3", "--count", "1"])
    demo = parser.parse_args(["demo"])
    assert (fleet.id_prefix, fleet.speed, fleet.start) == ("vb", 1.0, None)
    assert (demo.seed, demo.workdir, demo.streetlights, demo.bins) == (7, Path("var/demo"), 3, 2)
