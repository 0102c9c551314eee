"""Issue 8 item 6: every benchmark under bench/ runs in its --short mode and prints a figure line.

Each bench runs as a subprocess (exit 0) so the scripts cannot rot; a bench added to bench/
without an entry in ``FIGURE`` fails :func:`test_every_bench_is_covered`. Each pattern matches the
line carrying the bench's headline figure and its ratio/floor, so an empty or broken output fails.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"

# bench script -> regex the --short output must match (a figure next to its floor or ratio).
FIGURE: dict[str, str] = {
    "firmware_memory.py": r"JSON/link[\s\S]*\d+\.\d\d",
    "ble_throughput.py": r"\"ratio_vs_floor\": \d+\.\d+",
    "gateway_ingest.py": r"ceiling \(floor \+ storage floor, nothing else\): [\d,]+ reports/s = \d+\.\d\d of the"
                         r" floor[\s\S]*ratio full/floor: \d+\.\d+",
    "routes_bench.py": r"planned/fixed stops ratio \d+\.\d+",
    "sim_fleet.py": r"\d+/\d+ boards running .* MB RSS per board \(floor: empty host [\d.]+ MB\)",
    "sim_time.py": r"simulated h per wall s \(idle floor [\d.]+, ratio [\d.]+\)",
    "retention_pass.py": r"\d+ reports: counted pass [\d.]+ s CPU \(floor\), continuous pass an hour later [\d.]+ s "
                         r"CPU: ratio \d+\.\d+",
    # One serial sample in --short mode, and the start point (the outbox write seen by inotify) can land
    # ~10 ms after the frame left: the figure may be negative (the bench says so in a note line).
    "latency.py": r"serial p50 -?[\d.]+ ms[\s\S]*ratio serial p50 / floor p50: -?[\d.]+",
    "fleet_gateway.py": r"largest fleet with the gateway keeping up: [1-9]\d* boards; [\d.]+ MB RSS per board "
                        r"\(floor: empty host [\d.]+ MB\)",
}


def test_every_bench_is_covered() -> None:
    scripts = {p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(FIGURE), "bench scripts without a --short check (or stale entries): %r" % (
        scripts ^ set(FIGURE))


@pytest.mark.timeout(150)
@pytest.mark.parametrize("script", sorted(FIGURE))
def test_bench_short_runs_and_prints_its_figure(script: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--short"], cwd=REPO, capture_output=True,
                          text=True, timeout=140)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, "%s --short exited %d:\n%s" % (script, proc.returncode, out[-3000:])
    assert re.search(FIGURE[script], proc.stdout), "%s --short printed no figure line:\n%s" % (script, out[-3000:])
