"""``civicedge docs``: the pages, changelog, systemd unit and alert rules of this installation, by path or
text (the unit with its Documentation= pointing at the installed page). An installed wheel's layout is in
test_packaging_wheel.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from gateway import resources
from hil.cli import docs_cmd

REPO = Path(__file__).resolve().parents[2]


def _docs(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="civicedge")
    docs_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["docs", *argv])
    status = args.func(args)
    out, err = capsys.readouterr()
    return status, out, err


def test_the_resolvers_name_the_checkouts_files() -> None:
    assert resources.docs_dir() == REPO / "docs"
    assert resources.changelog_path() == REPO / "CHANGELOG.md"
    assert resources.service_unit_path() == REPO / "scripts" / "civicedge-gateway.service"
    assert resources.alert_rules_path() == REPO / "scripts" / "prometheus" / "civicedge-alerts.yml"
    for path in (resources.changelog_path(), resources.service_unit_path(), resources.alert_rules_path()):
        assert path.is_file(), path


def test_without_arguments_every_page_changelog_unit_and_alert_rules_are_listed_with_their_paths(
        capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _docs(capsys)
    assert status == 0
    rows = dict(line.split(None, 1) for line in out.splitlines())
    expected = {p.stem: str(p) for p in (REPO / "docs").glob("*.md")}
    expected.update({"changelog": str(REPO / "CHANGELOG.md"),
                     "--unit": str(REPO / "scripts" / "civicedge-gateway.service"),
                     "--alerts": str(REPO / "scripts" / "prometheus" / "civicedge-alerts.yml")})
    assert rows == expected


@pytest.mark.parametrize("name", ["gateway", "gateway.md", "docs/gateway.md"])
def test_a_page_by_name_or_as_messages_write_it_gives_its_path(capsys: pytest.CaptureFixture[str], name: str) -> None:
    assert _docs(capsys, name) == (0, f"{REPO / 'docs' / 'gateway.md'}\n", "")


@pytest.mark.parametrize("name", ["changelog", "CHANGELOG.md"])
def test_show_prints_the_changelog(capsys: pytest.CaptureFixture[str], name: str) -> None:
    assert _docs(capsys, name, "--show") == (0, (REPO / "CHANGELOG.md").read_text(encoding="utf-8"), "")


def test_an_unknown_page_is_a_usage_error_naming_the_pages(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _docs(capsys, "gatway")
    assert (status, out) == (docs_cmd.EXIT_USAGE, "")
    assert "no page 'gatway'; pages: " in err and "gateway" in err and "upgrading" in err and "changelog" in err


def test_show_without_a_page_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _docs(capsys, "--show")
    assert (status, out) == (docs_cmd.EXIT_USAGE, "")
    assert "--show needs a page name" in err


def test_a_page_and_unit_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _docs(capsys, "gateway", "--unit")
    assert info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_unit_prints_the_unit_with_documentation_pointing_at_the_installed_page(
        capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _docs(capsys, "--unit")
    assert status == 0
    shipped = (REPO / "scripts" / "civicedge-gateway.service").read_text(encoding="utf-8")
    assert "Documentation=file:///opt/civicedge/docs/gateway.md" in shipped
    assert f"Documentation={(REPO / 'docs' / 'gateway.md').as_uri()}\n" in out
    assert out.replace(f"Documentation={(REPO / 'docs' / 'gateway.md').as_uri()}",
                       "Documentation=file:///opt/civicedge/docs/gateway.md") == shipped


def test_unit_warns_on_stderr_when_its_exec_start_is_another_civicedge(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    _, _, err = _docs(capsys, "--unit")
    assert err == ""  # no civicedge beside this interpreter: nothing to compare
    (venv_bin / "civicedge").write_text("#!/bin/sh\n")
    status, out, err = _docs(capsys, "--unit")
    assert status == 0 and "ExecStart=/opt/civicedge/.venv/bin/civicedge gateway run" in out
    assert err == (f"warning: the unit's ExecStart= runs /opt/civicedge/.venv/bin/civicedge; this civicedge is "
                   f"{venv_bin / 'civicedge'}: edit ExecStart= if the service should run this one\n")


def test_alerts_prints_the_alert_rules(capsys: pytest.CaptureFixture[str]) -> None:
    rules = (REPO / "scripts" / "prometheus" / "civicedge-alerts.yml").read_text(encoding="utf-8")
    assert _docs(capsys, "--alerts") == (0, rules, "")


def test_an_installation_without_the_files_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # An older or damaged bundle: firmware/ and boards/ only.
    monkeypatch.setattr(resources, "project_root", lambda: tmp_path)
    for argv in ((), ("gateway",), ("changelog",), ("--unit",), ("--alerts",)):
        status, out, err = _docs(capsys, *argv)
        assert (status, out) == (docs_cmd.EXIT_MISSING if argv != ("gateway",) else docs_cmd.EXIT_USAGE, ""), argv
        assert err.startswith("error: "), argv
    _, _, err = _docs(capsys, "--unit")
    assert f"{tmp_path / 'scripts' / 'civicedge-gateway.service'} is not in this installation" in err
