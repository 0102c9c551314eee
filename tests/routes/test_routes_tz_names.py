"""DST QA: ``[routes] tz`` / ``--tz`` take IANA zone names only, not keys that tie plans to the host."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zoneinfo
from pathlib import Path

import pytest

from gateway.routes.config import parse_plan_defaults
from gateway.routes.errors import InvalidInputError
from gateway.routes.parsing import parse_timezone


@pytest.mark.parametrize("name", ["localtime", "Factory", "posixrules", "posix/Europe/Amsterdam", "right/UTC",
                                  "/usr/share/zoneinfo/Europe/Amsterdam", "Europe/../UTC", "Nowhere/Else", ""])
def test_host_keys_paths_and_unknown_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_plan_defaults({"tz": name}, base=Path("/"))
    assert info.value.field == "routes.tz"
    assert "give an IANA name such as Europe/Amsterdam or UTC" in info.value.message, info.value.message


def test_localtime_is_named_as_the_machines_setting() -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_timezone("localtime", field="tz")
    assert info.value.message == ("invalid tz 'localtime': names this machine's settings, not a time zone: "
                                  "give an IANA name such as Europe/Amsterdam or UTC")


@pytest.mark.parametrize("name", ["UTC", "Etc/UTC", "Europe/Amsterdam", "America/Argentina/Buenos_Aires",
                                  "Australia/Lord_Howe"])
def test_iana_names_stay_valid(name: str) -> None:
    assert str(parse_plan_defaults({"tz": name}, base=Path("/")).tz) == name


def test_every_name_zoneinfo_offers_but_the_host_keys_is_accepted() -> None:
    names = zoneinfo.available_timezones() - {"localtime", "Factory", "posixrules"}
    assert "UTC" in names and "Europe/Amsterdam" in names
    for name in names:
        parse_timezone(name)


@pytest.mark.timeout(60)
def test_the_command_line_refuses_localtime() -> None:
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "routes", "plan", "--date", "2026-11-23",
                           "--depot", "52.37,4.89", "--tz", "localtime", "--db", "/nonexistent/reports.sqlite"],
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 2, proc.stderr
    assert "invalid timezone 'localtime'" in proc.stderr and "Europe/Amsterdam" in proc.stderr, proc.stderr


@pytest.mark.timeout(60)
def test_the_zone_database_is_a_declared_dependency() -> None:
    """Without a system zone database (PYTHONTZPATH empty) zoneinfo reads the tzdata package: it must be
    declared, not arrive only through another package (it came through pandas)."""
    root = Path(__file__).resolve().parents[2]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "tzdata" in {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower() for d in deps}, deps
    code = ("from gateway.routes.parsing import parse_timezone; "
            "print(parse_timezone('Europe/Amsterdam'), parse_timezone('UTC'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50,
                          env={**os.environ, "PYTHONTZPATH": ""})
    assert proc.returncode == 0 and proc.stdout.split() == ["Europe/Amsterdam", "UTC"], proc.stderr
