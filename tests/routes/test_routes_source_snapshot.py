"""routes plan reads fills, tilts and alarms from one snapshot of the report store: an ingest batch or a
retention pass committed between those reads is in none of them (before: three read transactions, so a plan
could hold an alarm whose bin's fills it had not read, or a fill history without the tilt that followed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.routes.source import GatewayBinSource
from gateway.storage import ReportQueries

from routes_helpers import ROUND_START, T0
from routes_store import WINDOW_S, CityData

H = 3600


@pytest.fixture
def city(tmp_path: Path) -> Iterator[CityData]:
    data = CityData(tmp_path)
    yield data
    data.close()


def _write_after_the_fills(monkeypatch: pytest.MonkeyPatch, write: Any) -> list[int]:
    """Commit ``write()`` right after the planner's fill read returns, before its tilt and alarm reads."""
    calls: list[int] = []
    real = ReportQueries.field_values

    def fills_then_commit(self: ReportQueries, *args: Any, **kwargs: Any) -> Any:
        out = real(self, *args, **kwargs)
        calls.append(1)
        write()
        return out

    monkeypatch.setattr(ReportQueries, "field_values", fills_then_commit)
    return calls


def test_an_ingest_between_the_reads_is_not_in_the_plan(city: CityData, monkeypatch: pytest.MonkeyPatch) -> None:
    for d in ("bin-a", "bin-b"):
        city.add_device(d)
        city.windows(d, T0 - 4 * WINDOW_S, [50, 50, 50], tilt=0)

    def ingest() -> None:
        city.alarm("bin-a", T0 - H, "fire")  # a fire alarm after the fill history the plan read
        city.windows("bin-b", T0 - WINDOW_S, [50], tilt=1)  # bin-b knocked over, as last read

    calls = _write_after_the_fills(monkeypatch, ingest)
    bins = {b.id: b for b in GatewayBinSource(city.db_path, city.registry_dir).load(ROUND_START)}
    assert calls == [1]
    # the state of the store when the fills were read: no alarm, no tilt yet
    assert {d: b.alarms for d, b in bins.items()} == {"bin-a": frozenset(), "bin-b": frozenset()}
    assert [r.fill for r in bins["bin-b"].readings] == [0.5, 0.5, 0.5]
    monkeypatch.undo()
    # the next plan reads them (the writes did commit)
    again = {b.id: b.alarms for b in GatewayBinSource(city.db_path, city.registry_dir).load(ROUND_START)}
    assert again == {"bin-a": {"fire"}, "bin-b": {"tip"}}


def test_a_retention_pass_between_the_reads_is_not_in_the_plan(
        city: CityData, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retention removing the tilt values after the fill read: the plan still sees the bin lying down, as
    in the fill history it read (before: the fills of one state, the tilt of another)."""
    city.add_device("bin-a")
    city.windows("bin-a", T0 - 4 * WINDOW_S, [50, 50, 50], tilt=1)

    def retention() -> None:
        assert city.store.apply_retention({("bin", "tilt"): 1}, now=T0 + 3 * 86400) > 0

    calls = _write_after_the_fills(monkeypatch, retention)
    bins = {b.id: b for b in GatewayBinSource(city.db_path, city.registry_dir).load(ROUND_START)}
    assert calls == [1]
    assert bins["bin-a"].alarms == {"tip"} and len(bins["bin-a"].readings) == 3
    monkeypatch.undo()
    assert [b.alarms for b in GatewayBinSource(city.db_path, city.registry_dir).load(ROUND_START)] == [frozenset()]
