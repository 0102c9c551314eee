"""`civicedge --version` (also after a subcommand), and the version in the gateway's start log line."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import make_env
from procs import REPO, GatewayProcess

INSTALLED = version("civicedge")


@pytest.mark.parametrize("args", [["--version"], ["gateway", "--version"], ["gateway", "run", "--version"],
                                  ["--version", "gateway", "run"], ["boards", "list", "--version"]])
def test_version_flag_prints_the_installed_version(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "hil.cli.main", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "civicedge %s\n" % INSTALLED, "")


def test_the_start_log_line_names_the_version(tmp_path: Path) -> None:
    gw = GatewayProcess(make_env(tmp_path), tmp_path / "gw.log", verbose=1)
    try:
        gw.start()
        gw.wait_log("gateway gw-test running (civicedge %s):" % INSTALLED)
        assert gw.terminate() == 0
    finally:
        gw.kill()
