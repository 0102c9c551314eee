"""``gateway run --check`` reads retention.json as start-up does: regular only, bounded. A FIFO there
hung the check for ever (read_bytes() waited for a writer). Test fails before (timeout)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import make_env
from procs import REPO


def test_check_refuses_a_fifo_as_retention_file(tmp_path: Path) -> None:
    cfg = make_env(tmp_path)
    fifo = tmp_path / "data" / "retention.json"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "run", "--config", str(cfg), "--check"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert ("error (bad_retention_file): retention settings file %s cannot be read (is a FIFO, not a regular file); "
            "fix it or remove it" % fifo) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_check_refuses_a_retention_file_larger_than_1_mib(tmp_path: Path) -> None:
    cfg = make_env(tmp_path)
    big = tmp_path / "data" / "retention.json"
    big.write_text('{"overrides": []}' + " " * (1 << 20))
    done = subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "run", "--config", str(cfg), "--check"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "cannot be read (larger than 1 MiB, the most this file may hold)" in done.stderr, done.stderr
