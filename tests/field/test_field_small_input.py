"""Small input problems of provision, caught before the port is opened: a zone with a trailing space
(the registry's rule), a location with more than 9 decimals, 0,0 (a GPS without a fix), a bad
--board file, an empty --port, an admin token file other users may read."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.cli.main import main as civicedge_main

pytestmark = [pytest.mark.timeout(60)]


def _provision(tmp_path: Path, *extra: str, port: str | None = None, location: str = "52.1,4.2",
               zone: str = "centre") -> list[str]:
    return ["provision", "--port", port if port is not None else str(tmp_path / "ttyUSB9"), "--id", "sl-1",
            "--zone", zone, "--location", location, *extra]


@pytest.mark.parametrize(("zone", "says"), [("centre ", "starts or ends with a space; give it without: 'centre'"),
                                            ("..", "only dots")])
def test_zone_refused_with_the_registry_rule(zone: str, says: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc = civicedge_main(_provision(tmp_path, "--registry", str(tmp_path), zone=zone))
    err = capsys.readouterr().err
    assert rc == 2 and says in err and "does not exist" not in err, err  # before the port


def test_location_decimals_limit_and_null_island(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = civicedge_main(_provision(tmp_path, "--registry", str(tmp_path), location="52.1234567891,4.2"))
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "52.1234567891 has 10 decimals; at most 9 are allowed" in err, err
    rc = civicedge_main(_provision(tmp_path, "--registry", str(tmp_path), location="0,0.000"))
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "warning: location 0,0" in err and "GPS" in err and "does not exist" in err, err


def test_bad_board_file_refused_before_the_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("chip = \n")
    rc = civicedge_main(_provision(tmp_path, "--registry", str(tmp_path), "--board", str(bad)))
    err = capsys.readouterr().err
    assert rc == 2 and "bad.toml" in err and "does not exist" not in err.replace(str(bad), ""), err


@pytest.mark.parametrize("command", [["flash", "--firmware-only", "--board", "streetlight-esp32"], ["check", "--db", "x"],
                                     ["provision", "--id", "sl-1", "--zone", "c", "--location", "1,2",
                                      "--registry", "."]])
def test_empty_port(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc = civicedge_main([*command, "--port", ""])
    err = capsys.readouterr().err
    assert rc == 2 and "no port given" in err, err


def test_admin_token_file_readable_by_others_is_warned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "admin.token"
    token.write_text("7b2d083c95376b1dc5c46d8b982458ba\n")
    token.chmod(0o644)
    rc = civicedge_main(_provision(tmp_path, "--gateway", "http://127.0.0.1:9", "--token-file", str(token)))
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and f"is readable by other users (mode 644); run: chmod 600 {token}" in err, err
    token.chmod(0o600)
    civicedge_main(_provision(tmp_path, "--gateway", "http://127.0.0.1:9", "--token-file", str(token)))
    assert "readable by other users" not in capsys.readouterr().err


def test_failed_step_is_marked_and_no_spinner_off_a_terminal(tmp_path: Path, silent_pty: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", *_provision(tmp_path, "--registry", str(tmp_path),
                                                                             "--repl-timeout", "1", port=silent_pty)],
                          capture_output=True, text=True, timeout=45)
    assert proc.returncode == 2, proc.stderr
    assert "✗ connect to the board" in proc.stdout, proc.stdout
    assert not any(0x2800 <= ord(c) <= 0x28FF for c in proc.stdout + proc.stderr), proc.stdout  # braille spinner
