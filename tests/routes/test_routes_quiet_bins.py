"""Full bins whose sensor went quiet (last fill older than the history read) are reported, not dropped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.routes.errors import NoBinsDueError
from gateway.routes.planner import PlanSettings, plan_collection
from gateway.routes.source import GatewayBinSource

from routes_helpers import DAY, DEPOT, ROUND_START, T0
from routes_store import CityData

# (the round start: readings after it are left out)
QUIET = f"no fill reading in the 4 days before the round start {ROUND_START.isoformat(timespec='minutes')}"


@pytest.fixture
def city(tmp_path: Path) -> Iterator[CityData]:
    data = CityData(tmp_path)
    yield data
    data.close()


def test_quiet_full_bins_are_skipped_with_the_reason_and_named_in_the_exit_3_message(city: CityData) -> None:
    for dev in ("bin-q1", "bin-q2"):
        city.add_device(dev)
        city.windows(dev, T0 - 6 * 86400, [90, 100])  # full, then silent for 6 days
    bins = GatewayBinSource(city.db_path, city.registry_dir).load(ROUND_START)
    assert [b.no_reading_reason for b in bins] == [QUIET] * 2
    with pytest.raises(NoBinsDueError) as info:
        plan_collection(bins, PlanSettings(day=DAY, depot=DEPOT, vehicles=1, capacity_l=5000.0, time_limit_s=0.5))
    err = info.value
    assert err.exit_code == 3 and err.considered == 2
    assert err.skipped == (("bin-q1", QUIET),
                           ("bin-q2", QUIET))
    assert "2 of 2 bins skipped" in str(err) and "bin-q1: " + QUIET in str(err)
    # demo QA: "none of 0 bins with data is at or above 80%" read as if bins had been judged
    assert "no bin has fill data to judge" in str(err) and "none of 0" not in str(err)


def test_a_quiet_bin_is_listed_in_skipped_next_to_a_plan(city: CityData) -> None:
    city.add_device("bin-full")
    city.add_device("bin-quiet")
    city.windows("bin-full", T0 - 3600, [90, 100])
    city.windows("bin-quiet", T0 - 5 * 86400, [100])
    bins = GatewayBinSource(city.db_path, city.registry_dir).load(ROUND_START)
    plan = plan_collection(bins, PlanSettings(day=DAY, depot=DEPOT, vehicles=1, capacity_l=5000.0, time_limit_s=0.5))
    assert plan.skipped == (("bin-quiet", QUIET),)
