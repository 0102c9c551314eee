"""`civicedge gateway init` into a directory that does not exist yet, as an operator runs it."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from procs import REPO


def _civicedge(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "hil.cli.main", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def test_init_creates_missing_parent_directories_owner_only(tmp_path: Path) -> None:
    """It failed with bad_path ("No such file or directory") when the directory did not exist."""
    target = tmp_path / "etc" / "civicedge" / "gateway.toml"
    done = _civicedge("gateway", "init", str(target))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "wrote %s" % target
    for d in (tmp_path / "etc", tmp_path / "etc" / "civicedge"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d  # as the gateway's data directories
    # What it wrote is a config the gateway loads.
    check = _civicedge("gateway", "run", "--config", str(target), "--check")
    assert check.returncode == 0, check.stderr
    assert "config OK" in check.stdout


def test_init_names_a_parent_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory\n")
    done = _civicedge("gateway", "init", str(tmp_path / "afile" / "sub" / "gateway.toml"))
    assert done.returncode == 1
    assert "error (bad_path)" in done.stderr and "cannot create the directory" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_init_help_says_parents_are_created() -> None:
    done = _civicedge("gateway", "init", "--help")
    assert done.returncode == 0
    assert "parent directories are created" in " ".join(done.stdout.split())
