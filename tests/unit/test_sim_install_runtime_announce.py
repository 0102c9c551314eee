"""`civicedge sim install-runtime` says it is installing only once it will run npm ci: a directory it
refuses, or a runtime already installed, is not announced as an install starting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ANNOUNCE = "installing the simulator's Node packages into"

# A stand-in for npm (no registry in unit tests): `npm ci` makes the runtime package and logs the call.
FAKE_NPM = """#!/bin/sh
echo "$PWD $*" >> "$FAKE_NPM_LOG"
mkdir -p node_modules/@micropython/micropython-webassembly-pyscript
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(FAKE_NPM)
    (bin_dir / "npm").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_NPM_LOG": str(tmp_path / "npm-calls.log")}


def _install(target: Path, env: dict[str, str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "hil.cli.main", "sim", "install-runtime", "--dir", str(target)],
                          capture_output=True, text=True, timeout=60, cwd=target.parent, env=env)


def test_a_refused_directory_is_not_announced(tmp_path: Path, env: dict[str, str]) -> None:
    """Before, it printed 'installing ... (npm ci)...' and then refused."""
    theirs = tmp_path / "project"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine\n")
    done = _install(theirs, env)
    assert done.returncode == 1
    assert "was not made by install-runtime" in done.stderr
    assert ANNOUNCE not in done.stdout and done.stdout == ""
    assert not (tmp_path / "npm-calls.log").exists()


def test_an_install_is_announced_before_npm_ci_and_a_current_runtime_is_not(tmp_path: Path,
                                                                            env: dict[str, str]) -> None:
    target = tmp_path / "rt"
    first = _install(target, env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[:2] == [f"{ANNOUNCE} {target} (npm ci)...", f"installed: {target}/node_modules"], lines
    assert len((tmp_path / "npm-calls.log").read_text().splitlines()) == 1
    second = _install(target, env)
    assert second.returncode == 0, second.stderr
    assert ANNOUNCE not in second.stdout
    assert second.stdout.startswith(f"already installed: {target}/node_modules")
    assert len((tmp_path / "npm-calls.log").read_text().splitlines()) == 1  # npm ci not run again
