"""``civicedge docs``: the pages, changelog, systemd unit and alert rules of this installation, by path or
text (the unit with its Documentation= pointing at the installed page). An installed wheel's layout is in
test_packaging_wheel.py."""

from __future__ import annotations

import argparse
import os
import subprocess
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
    expected.update({p.name: str(p) for p in (REPO / "docs").glob("*.json")})
    assert expected["protocol-vectors.json"] == str(REPO / "docs" / "protocol-vectors.json")
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


@pytest.mark.parametrize("name", ["protocol-vectors", "protocol-vectors.json", "docs/protocol-vectors.json"])
def test_the_protocol_test_vectors_by_name_give_their_path_and_text(capsys: pytest.CaptureFixture[str],
                                                                   name: str) -> None:
    # docs/protocol.md §7 sends integrators to docs/protocol-vectors.json.
    vectors = REPO / "docs" / "protocol-vectors.json"
    assert _docs(capsys, name) == (0, f"{vectors}\n", "")
    assert _docs(capsys, name, "--show") == (0, vectors.read_text(encoding="utf-8"), "")


def test_a_json_name_is_not_a_page_of_that_stem(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _docs(capsys, "gateway.json")
    assert status == docs_cmd.EXIT_USAGE and "no page 'gateway.json'" in err and "protocol-vectors.json" in err


def _script(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def _unit(program: str) -> str:
    return f"[Service]\nExecStart={program} gateway run -c /etc/civicedge/gateway.toml\n"


def test_unit_warns_when_its_exec_start_is_missing_though_this_civicedge_is_a_user_install(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pip install --user: /usr/bin/python3 runs ~/.local/bin/civicedge; nothing is beside the interpreter.
    script = _script(tmp_path / "home" / ".local" / "bin" / "civicedge")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "usr" / "bin" / "python3"))
    monkeypatch.setattr(sys, "argv", [str(script), "docs", "--unit"])
    status, out, err = _docs(capsys, "--unit")
    assert status == 0 and "ExecStart=/opt/civicedge/.venv/bin/civicedge gateway run" in out
    assert err == ("warning: the unit's ExecStart= runs /opt/civicedge/.venv/bin/civicedge, which does not exist; "
                   f"this civicedge is {script.resolve()}: edit ExecStart= to the civicedge the service should run\n")


def test_unit_warns_when_its_exec_start_is_another_existing_civicedge(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = _script(tmp_path / "venv" / "bin" / "civicedge")
    other = _script(tmp_path / "opt" / "bin" / "civicedge")
    monkeypatch.setattr(sys, "argv", [str(script)])
    assert docs_cmd._exec_start_note(_unit(str(other))) == (
        f"warning: the unit's ExecStart= runs {other}; this civicedge is {script.resolve()}: edit ExecStart= if the "
        "service should run this one")
    # systemd's prefixes are not part of the path; a link to this civicedge is this civicedge.
    link = tmp_path / "usr" / "local" / "bin" / "civicedge"
    link.parent.mkdir(parents=True)
    link.symlink_to(script)
    assert docs_cmd._exec_start_note(_unit(f"-{script}")) is None
    assert docs_cmd._exec_start_note(_unit(str(link))) is None


def test_unit_without_a_civicedge_script_running_compares_with_the_one_on_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # python -m hil.cli.main with an interpreter that has no civicedge beside it: the one on PATH.
    on_path = _script(tmp_path / "bin" / "civicedge")
    monkeypatch.setattr(sys, "argv", [str(REPO / "hil" / "cli" / "main.py")])
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python-without-civicedge" / "python3"))
    monkeypatch.setenv("PATH", str(on_path.parent))
    other = _script(tmp_path / "opt" / "civicedge")
    note = docs_cmd._exec_start_note(_unit(str(other)))
    assert note is not None and f"runs {other}; this civicedge is {on_path.resolve()}:" in note
    assert docs_cmd._exec_start_note(_unit(str(on_path))) is None
    assert docs_cmd._exec_start_note(_unit("civicedge")) is None  # a bare name: systemd looks it up
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert docs_cmd._exec_start_note(_unit(str(other))) is None  # nothing to compare with: it exists
    assert docs_cmd._exec_start_note(_unit("/opt/civicedge/.venv/bin/civicedge")) == (
        "warning: the unit's ExecStart= runs /opt/civicedge/.venv/bin/civicedge, which does not exist; no "
        "civicedge is on PATH: edit ExecStart= to the civicedge the service should run")


def test_python_m_compares_with_the_civicedge_beside_its_interpreter_before_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review of d6bd448: `python -m hil.cli.main docs --unit` compared with whichever civicedge was first on
    PATH, another installation's."""
    venv = _script(tmp_path / "venv" / "bin" / "civicedge")
    other = _script(tmp_path / "elsewhere" / "civicedge")
    monkeypatch.setattr(sys, "argv", [str(REPO / "hil" / "cli" / "main.py")])
    monkeypatch.setattr(sys, "executable", str(venv.parent / "python3"))
    monkeypatch.setenv("PATH", str(other.parent))
    assert docs_cmd.running_civicedge() == venv.resolve()


def test_a_civicedge_script_outside_the_interpreters_directory_warns_about_the_shipped_unit(tmp_path: Path) -> None:
    # The real thing: a script named civicedge, elsewhere than sys.executable, run by the interpreter.
    script = tmp_path / "local" / "bin" / "civicedge"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!{sys.executable}\n"
                      "import argparse, sys\n"
                      "from hil.cli import docs_cmd\n"
                      "parser = argparse.ArgumentParser(prog='civicedge')\n"
                      "docs_cmd.register(parser.add_subparsers(dest='command'))\n"
                      "args = parser.parse_args(sys.argv[1:])\n"
                      "sys.exit(args.func(args))\n")
    script.chmod(0o755)
    if Path("/opt/civicedge/.venv/bin/civicedge").exists():
        pytest.skip("this machine has /opt/civicedge/.venv/bin/civicedge, which the shipped unit runs")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([str(script), "docs", "--unit"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ExecStart=/opt/civicedge/.venv/bin/civicedge gateway run" in proc.stdout
    assert proc.stderr == ("warning: the unit's ExecStart= runs /opt/civicedge/.venv/bin/civicedge, which does "
                           f"not exist; this civicedge is {script.resolve()}: edit ExecStart= to the civicedge the "
                           "service should run\n")


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
