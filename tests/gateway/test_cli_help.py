"""Every `civicedge gateway` subcommand says what it does and what each of its arguments means."""

from __future__ import annotations

import argparse

import pytest

from hil.cli.main import build_parser


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def gateway_commands() -> dict[str, argparse.ArgumentParser]:
    gateway = subparsers(build_parser())["gateway"]
    out = {}
    for name, parser in subparsers(gateway).items():
        out[name] = parser
        for sub, p in subparsers(parser).items():
            out["%s %s" % (name, sub)] = p
    return out


@pytest.mark.parametrize("name", sorted(gateway_commands()))
def test_every_argument_has_help(name: str) -> None:
    parser = gateway_commands()[name]
    missing = [a.dest for a in parser._actions
               if not isinstance(a, argparse._SubParsersAction) and not a.help and a.help != argparse.SUPPRESS]
    assert missing == [], "gateway %s --help leaves %s unexplained" % (name, missing)


@pytest.mark.parametrize("name", ["devices", "devices add", "devices list", "devices show", "devices revoke",
                                  "devices rotate-key", "export-log", "verify-log"])
def test_subcommand_has_a_description(name: str) -> None:
    assert gateway_commands()[name].description


def test_devices_show_explains_id_and_json() -> None:
    text = gateway_commands()["devices show"].format_help()
    assert "device id" in text and "JSON object" in text
