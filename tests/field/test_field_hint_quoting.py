"""The repair commands ``check --registry`` and ``provision`` print paste as they are: every echoed
argument is shell-quoted. The registry takes a zone with spaces (``old town``); unquoted, ``--zone old
town`` parsed as zone ``old`` and a stray argument ``town``.

Each printed command is cut out of its message, split as a shell splits it and parsed by the
``civicedge`` parser itself.
"""

from __future__ import annotations

import argparse
import io
import re
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from gateway.registry import Registry
from hil.cli.main import build_parser, parse_command_line
from hil.field.identity import Identity, new_identity
from hil.field.provision import ProvisionResult
from hil.field.provision_cmd import _old_id
from hil.field.registration import Registration, register_device, registry_problem

PORT = "/dev/serial/by-id/usb board 1"
# A command runs up to the prose around it: " (" or ")" after it, or the end of the message.
_COMMAND = re.compile(r"civicedge (?:provision|gateway devices revoke) [^()]*?(?= \(|\)|$)")


def _commands(text: str) -> list[argparse.Namespace]:
    found = _COMMAND.findall(text)
    assert found, text
    parser = build_parser()
    parsed = []
    for command in found:
        argv = shlex.split(command)
        assert argv[0] == "civicedge"
        parsed.append(parse_command_line(parser, argv[1:]))  # exits (SystemExit) on a stray argument
    return parsed


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "gateway data" / "registry"
    Registry(path).close()
    return path


def test_registry_problem_commands_keep_a_zone_with_spaces(registry: Path) -> None:
    ident = new_identity(device_id="sl-9", kind="streetlight", zone="old town", lat="-33.8688", lon="151.2093")

    def problem(identity: Identity) -> str:
        text = registry_problem(registry, identity, port=PORT)[1]
        assert text is not None
        return text

    seen = []
    (cmd,) = _commands(problem(ident))  # not registered
    seen.append(cmd)
    register_device(registry, ident)
    other_key = replace(ident, key=bytes(32))
    (cmd,) = _commands(problem(other_key))  # another key: --force --take-over
    assert cmd.force and cmd.take_over and cmd.discard_unsent
    seen.append(cmd)
    (cmd,) = _commands(problem(replace(ident, zone="centre")))  # re-provision with the registered zone
    assert cmd.zone == "old town" and cmd.force
    seen.append(cmd)
    reg = Registry(registry)
    reg.revoke("sl-9")
    reg.close()
    (cmd,) = _commands(problem(ident))
    assert cmd.device_id == "NEW-ID" and cmd.force
    for cmd in seen:
        assert cmd.device_id == "sl-9"
    for cmd in [*seen, cmd]:
        assert (cmd.command, cmd.port, cmd.zone, cmd.location, cmd.registry) == (
            "provision", PORT, "old town", "-33.8688,151.2093", registry)


def test_old_id_revoke_command_keeps_a_registry_path_with_spaces(
        registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = new_identity(device_id="sl-old", kind="streetlight", zone="old town", lat="52.1", lon="4.2")
    register_device(registry, old)
    new = new_identity(device_id="sl-new", kind="streetlight", zone="old town", lat="52.1", lon="4.2")
    result = ProvisionResult(new, device_changed=True, registration=Registration.ADDED, replaced=old)
    args = argparse.Namespace(registry=registry, revoke_old=False)
    assert _old_id(Console(file=io.StringIO()), args, result) == "registered"
    (cmd,) = _commands(" ".join(capsys.readouterr().err.split()))
    assert (cmd.device_id, cmd.registry) == ("sl-old", registry), cmd
