"""Bin status from the gateway's real report store and registry."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.resources import load_policy
from gateway.routes.errors import BinDataError
from gateway.routes.outputs import plan_to_dict
from gateway.routes.planner import PlanSettings, plan_collection
from gateway.routes.source import FIELDS_USED, GatewayBinSource

from routes_helpers import DAY, DEPOT, ROUND_START, T0
from routes_store import WINDOW_S, CityData

H = 3600


@pytest.fixture
def city(tmp_path: Path) -> Iterator[CityData]:
    data = CityData(tmp_path)
    yield data
    data.close()


def source(city: CityData) -> GatewayBinSource:
    return GatewayBinSource(city.db_path, city.registry_dir)


def test_loads_bins_with_history_zone_and_location(city: CityData) -> None:
    city.add_device("bin-a", zone="north", lat="52.3801", lon="4.9002")
    city.add_device("bin-b")
    city.add_device("lamp-1", kind="streetlight")
    city.windows("bin-a", T0 - 4 * WINDOW_S, [40, 50, 50, 60])
    city.windows("bin-a", T0 + 3600, [90])  # after the round start: not known when planning
    bins = {b.id: b for b in source(city).load(ROUND_START)}
    assert set(bins) == {"bin-a", "bin-b"}
    a = bins["bin-a"]
    assert (a.zone, a.lat, a.lon) == ("north", 52.3801, 4.9002)
    assert [(r.t - T0, r.fill) for r in a.readings] == [(-3 * WINDOW_S, 0.4), (-2 * WINDOW_S, 0.5),
                                                       (-WINDOW_S, 0.5), (0, 0.6)]
    assert bins["bin-b"].readings == () and bins["bin-b"].alarms == frozenset()


def test_revoked_bins_left_out(city: CityData) -> None:
    city.add_device("bin-a")
    city.add_device("bin-r")
    city.registry.revoke("bin-r")
    assert [b.id for b in source(city).load(ROUND_START)] == ["bin-a"]


def test_retired_bins_left_out_and_planned_again_once_reinstated(city: CityData) -> None:
    """A bin taken off the street (or moved to another gateway's district) is retired: no crew is sent to
    it. Test fails before (the planner left out only revoked bins)."""
    city.add_device("bin-a")
    city.add_device("bin-r")
    city.windows("bin-r", T0 - 2 * WINDOW_S, [95, 95], tilt=0)
    city.registry.retire("bin-r")
    assert [b.id for b in source(city).load(ROUND_START)] == ["bin-a"]
    city.registry.reinstate("bin-r")
    assert sorted(b.id for b in source(city).load(ROUND_START)) == ["bin-a", "bin-r"]


def test_alarm_rules(city: CityData) -> None:
    for d in ("tipped", "righted", "burning", "emptied", "old"):
        city.add_device(d)
        city.windows(d, T0 - 8 * H, [50] * 8, tilt=1 if d == "tipped" else 0)
    city.alarm("tipped", T0 - 3 * H, "tip")
    city.alarm("righted", T0 - 5 * H, "tip")
    city.windows("righted", T0 - 2 * H, [50], tilt=0)  # upright again after the alarm
    city.alarm("burning", T0 - 1 * H, "fire")
    city.alarm("emptied", T0 - 6 * H, "fire")
    city.windows("emptied", T0 - 4 * H, [0, 0])  # crew emptied it after the fire alarm
    city.alarm("old", T0 - 30 * H, "fire")  # older than the alarm window
    bins = {b.id: b.alarms for b in source(city).load(ROUND_START)}
    assert bins == {"tipped": {"tip"}, "righted": frozenset(), "burning": {"fire"}, "emptied": frozenset(),
                    "old": frozenset()}


def test_a_six_hourly_fill_ending_after_an_alarm_shows_the_bin_emptied(city: CityData) -> None:
    """A 6-hourly fill is the level at the end of its period: the period a fire alarm fell in tells
    whether the bin was emptied after it (its start is before the alarm, its end after)."""
    six = 6 * H
    for d in ("emptied", "burning"):
        city.add_device(d)
        city.alarm(d, T0 - 4 * H, "fire")
    city.fill_releases("emptied", T0 - 3 * six, [70, 90, 0])   # 00:00-06:00 ends empty: crew came
    city.fill_releases("burning", T0 - 3 * six, [70, 90, 90])
    bins = {b.id: b for b in source(city).load(ROUND_START)}
    assert bins["emptied"].alarms == frozenset() and bins["burning"].alarms == {"fire"}
    assert [(r.t, r.fill) for r in bins["emptied"].readings] == [(T0 - 2 * six, 0.7), (T0 - six, 0.9), (T0, 0.0)]


def test_lid_counts_never_change_a_plan(tmp_path: Path) -> None:
    plans = []
    for with_lid in (False, True):
        data = CityData(tmp_path / str(with_lid))
        for i in range(8):
            data.add_device(f"bin-{i}", lat=f"52.3{i}", lon="4.89")
            data.windows(f"bin-{i}", T0 - 12 * WINDOW_S, [10 * i + 5 * (k // 4) for k in range(12)],
                         lid=(1000 if i % 2 else 7) if with_lid else None)
        bins = GatewayBinSource(data.db_path, data.registry_dir).load(ROUND_START)
        data.close()
        plan = plan_collection(bins, PlanSettings(day=DAY, depot=DEPOT, time_limit_s=0, threshold=0.5))
        d = plan_to_dict(plan)
        d.pop("solver_s")
        plans.append(d)
    assert plans[0] == plans[1]
    assert plans[0]["stops"] > 0


def test_fields_used_are_not_personal() -> None:
    fields = load_policy()["kinds"]["bin"]["fields"]
    assert "lid" not in FIELDS_USED
    for name in FIELDS_USED:
        assert fields[name]["personal"] is False, name


def test_missing_store_or_registry(tmp_path: Path, city: CityData) -> None:
    with pytest.raises(BinDataError) as info:
        GatewayBinSource(tmp_path / "nope.sqlite", city.registry_dir).load(ROUND_START)
    assert info.value.exit_code == 5 and "nope.sqlite" in info.value.source
    with pytest.raises(BinDataError) as info:
        GatewayBinSource(city.db_path, tmp_path / "noreg").load(ROUND_START)
    assert "registry" in info.value.problem
    assert not (tmp_path / "noreg").exists()  # a read never creates a registry
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 10)
    with pytest.raises(BinDataError):
        GatewayBinSource(tmp_path / "junk.sqlite", city.registry_dir).load(ROUND_START)


def test_open_registry_object_accepted(city: CityData) -> None:
    city.add_device("bin-a")
    bins = GatewayBinSource(city.db_path, city.registry).load(ROUND_START)
    assert [b.id for b in bins] == ["bin-a"]
    city.registry.list()  # still open: the source did not close a registry it was given


def test_planning_reads_an_older_registry_without_upgrading_it(tmp_path: Path) -> None:
    """The planner only reads the registry: one an older version left (no retired column, possibly on a
    read-only mount) is read as nothing retired, not upgraded. Test fails before (it opened the registry to
    write and added the column; on a read-only mount, planning failed)."""
    data = CityData(tmp_path)
    data.add_device("bin-a")
    data.close()
    conn = sqlite3.connect(data.registry_dir / "devices.sqlite")
    conn.execute("ALTER TABLE devices DROP COLUMN retired")
    conn.commit()
    conn.close()
    assert [b.id for b in GatewayBinSource(data.db_path, data.registry_dir).load(ROUND_START)] == ["bin-a"]
    conn = sqlite3.connect(data.registry_dir / "devices.sqlite")
    try:
        assert "retired" not in {str(row[1]) for row in conn.execute("PRAGMA table_info(devices)")}
    finally:
        conn.close()
