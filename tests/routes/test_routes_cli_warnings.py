"""`routes plan` prints each planner warning once (it is in the plan's warnings and was also logged)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from osrm_fake import closed_port
from routes_helpers import T0
from routes_store import WINDOW_S, CityData


@pytest.fixture
def city(tmp_path: Path) -> Iterator[CityData]:
    data = CityData(tmp_path)
    for i in range(3):
        data.add_device(f"bin-{i}", lat=f"52.{370 + i}", lon="4.89")
        data.windows(f"bin-{i}", T0 - 4 * WINDOW_S, [90] * 4)
    yield data
    data.close()


@pytest.mark.timeout(60)
def test_osrm_fallback_warning_is_printed_once(city: CityData) -> None:
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "routes", "plan", "--date", "2026-11-23",
                           "--depot", "52.37,4.89", "--db", str(city.db_path), "--time-limit", "0.3",
                           "--osrm", f"http://127.0.0.1:{closed_port()}", "--osrm-timeout", "2"],
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("falling back to great-circle") == 1, proc.stderr


def test_a_planner_warning_held_for_the_plan_is_logged_when_no_plan_comes(caplog: pytest.LogCaptureFixture) -> None:
    """Held back because the plan prints it; if planning then fails there is no plan to print it."""
    import logging

    from gateway.routes.cli import _warnings_shown_by_the_plan

    caplog.set_level(logging.WARNING)
    with _warnings_shown_by_the_plan():
        logging.getLogger("gateway.routes.distances").warning("OSRM unreachable: falling back to great-circle")
    assert "falling back" not in caplog.text  # printed with the plan instead
    with pytest.raises(RuntimeError), _warnings_shown_by_the_plan():
        logging.getLogger("gateway.routes.distances").warning("OSRM unreachable: falling back to great-circle")
        raise RuntimeError("solver failed")
    assert caplog.text.count("falling back to great-circle") == 1


@pytest.mark.timeout(60)
def test_unknown_bin_volume_ids_are_on_stderr_when_no_bins_are_due(city: CityData, tmp_path: Path) -> None:
    """Exit 3 has no plan to print the warning with: it is logged to stderr instead."""
    vols = tmp_path / "vols.csv"
    vols.write_text("id,volume_l\nnope,240\n")
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "routes", "plan", "--date", "2026-11-23",
                           "--depot", "52.37,4.89", "--db", str(city.db_path), "--threshold", "1",
                           "--bin-volumes", str(vols)], capture_output=True, text=True, timeout=50)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("not registered bins") == 1 and "nope" in proc.stderr, proc.stderr
