"""The project skeleton every layer builds on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gateway.resources import load_policy


def test_top_level_layout(repo_root: Path) -> None:
    for name in ("firmware", "boards", "gateway", "hil", "tests", "bench", "docs", "pyproject.toml"):
        assert (repo_root / name).exists(), name
    assert (repo_root / "hil" / "sim" / "package-lock.json").is_file()


def test_ci_runs_the_readme_test_command(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    ci = (repo_root / ".ci" / "run").read_text()
    assert "scripts/test" in readme
    assert "exec scripts/test" in ci


def test_console_script_help() -> None:
    out = subprocess.run([sys.executable, "-m", "hil.cli.main", "--help"], capture_output=True, text=True, check=True)
    assert "civicedge" in out.stdout


def test_policy_is_valid_json_with_both_kinds(repo_root: Path) -> None:
    policy = load_policy()
    assert set(policy["kinds"]) >= {"streetlight", "bin"}
    json.loads((repo_root / "firmware" / "policy.json").read_text())
