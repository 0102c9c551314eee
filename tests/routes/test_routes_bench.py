"""The routes benchmark runs in CI mode and shows planning beats the fixed round."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(120)
def test_bench_short_city_of_500(repo_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(repo_root / "bench" / "routes_bench.py"), "--short", "--days", "1", "--time-limit", "0.2"],
        capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "city: 500 bins" in out
    ratio = float(re.search(r"planned/fixed distance ratio ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    stops = float(re.search(r"planned/fixed stops ratio ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    assert 0 < ratio < 1 and 0 < stops < 1
    assert re.search(r"solver time per plan: planned max [0-9.]+ s", out)
    assert int(re.search(r"peak RSS ([0-9]+) MB", out).group(1)) > 0  # type: ignore[union-attr]
