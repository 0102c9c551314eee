"""Selection of the bins to empty: threshold, fill-rate prediction, alarms, no people signal."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from hypothesis import given, settings, strategies as st

from gateway.routes.errors import InvalidInputError
from gateway.routes.model import BinStatus, FillReading, Reason
from gateway.routes.selection import (
    SelectionSettings,
    fill_rate_per_day,
    select_bins,
    since_last_emptying,
    theil_sen_slope,
)

from routes_helpers import HOUR, MAX_EXAMPLES, ROUND_START, T0, make_bin


def sel(threshold: float = 0.8, days: int = 1, **kw: object) -> SelectionSettings:
    return SelectionSettings(round_start=ROUND_START, next_round=ROUND_START + timedelta(days=days),
                             threshold=threshold, **kw)  # type: ignore[arg-type]


def test_theil_sen_ignores_an_outlier() -> None:
    pts = [(float(x), 2.0 * x + 1) for x in range(10)]
    pts[4] = (4.0, 100.0)  # one wrong echo
    assert theil_sen_slope(pts) == pytest.approx(2.0)


def test_theil_sen_degenerate() -> None:
    assert theil_sen_slope([]) == 0.0
    assert theil_sen_slope([(1.0, 5.0), (1.0, 7.0)]) == 0.0


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(slope=st.floats(-5, 5, allow_nan=False), icpt=st.floats(-10, 10, allow_nan=False),
       xs=st.lists(st.integers(0, 10_000), min_size=2, max_size=30, unique=True))
def test_theil_sen_exact_on_lines(slope: float, icpt: float, xs: list[int]) -> None:
    assert theil_sen_slope([(float(x), slope * x + icpt) for x in xs]) == pytest.approx(slope, abs=1e-6)


def test_emptying_starts_a_new_segment() -> None:
    readings = [FillReading(t, f) for t, f in [(0, 0.5), (1, 0.9), (2, 0.1), (3, 0.2), (4, 0.3)]]
    assert [r.t for r in since_last_emptying(readings, 0.25)] == [2, 3, 4]
    # order of input does not matter
    assert [r.t for r in since_last_emptying(list(reversed(readings)), 0.25)] == [2, 3, 4]


def test_planning_from_six_hourly_fill_releases() -> None:
    """A bin releases its fill only as the level at the end of each 6 h (firmware/policy.json
    release_every_s): a rate, a prediction and the full rule still come out of those few points."""
    # 40 %/day: +10 % per 6-hour period over 2 days, the last level (60 %) at the round start
    rising = make_bin("rising", [0, 0, 10, 20, 30, 40, 50, 60][-8:], step_s=6 * HOUR)
    assert fill_rate_per_day(rising.readings, sel()) == pytest.approx(0.4, rel=0.15)
    full = make_bin("full", [50, 60, 70, 80], step_s=6 * HOUR)
    flat = make_bin("flat", [30, 30, 30, 30], step_s=6 * HOUR)
    chosen, _ = select_bins([rising, full, flat], sel())
    assert {(c.bin.id, c.reason) for c in chosen} == {("rising", Reason.PREDICTED), ("full", Reason.FULL)}
    # one release only: no rate (a single point), but its level is judged as it is
    assert fill_rate_per_day(make_bin("one", [90], step_s=6 * HOUR).readings, sel()) == 0.0


def test_rate_from_quantised_steps() -> None:
    # +10 % every 4 h = 60 %/day, reported in 10 % steps every 15 min for 2 days
    percents = [min(100, 10 * (k // 16)) for k in range(0, 96 * 2, 1)][:40]
    b = make_bin("b", percents, step_s=900)
    assert fill_rate_per_day(b.readings, sel()) == pytest.approx(0.6, rel=0.15)


def test_rate_zero_without_enough_history_or_when_stale() -> None:
    assert fill_rate_per_day(make_bin("b", [10, 20], step_s=600).readings, sel()) == 0.0  # 10 min span
    stale = tuple(FillReading(r.t - 5 * 86400, r.fill) for r in make_bin("b", [10, 20, 30, 40]).readings)
    assert fill_rate_per_day(stale, sel()) == 0.0
    falling = make_bin("b", [70, 60, 60, 50, 50])  # slow settling never gives a negative rate
    assert fill_rate_per_day(falling.readings, sel()) == 0.0


def test_threshold_full_predicted_and_not_due() -> None:
    full = make_bin("full", [80, 80, 80])
    fast = make_bin("fast", [20, 30, 40, 50, 60, 70], step_s=2 * HOUR)  # 10 %/2 h -> full before tomorrow
    slow = make_bin("slow", [40, 40, 40, 40, 50, 50], step_s=6 * HOUR)
    below = make_bin("below", [70, 70, 70])
    chosen, skipped = select_bins([full, fast, slow, below], sel())
    by_id = {c.bin.id: c for c in chosen}
    assert set(by_id) == {"full", "fast"}
    assert by_id["full"].reasons == (Reason.FULL,)
    assert by_id["fast"].reasons == (Reason.PREDICTED,)
    assert by_id["fast"].predicted_next == 1.0
    assert skipped == []
    # a longer horizon makes the slow one due as well
    chosen, _ = select_bins([slow], sel(days=7))
    assert [c.reason for c in chosen] == [Reason.PREDICTED]


def test_threshold_is_inclusive_and_configurable() -> None:
    b = make_bin("b", [60, 60, 60])
    assert select_bins([b], sel(threshold=0.6))[0]
    assert not select_bins([b], sel(threshold=0.61))[0]


def test_alarms_first_even_when_empty() -> None:
    bins = [make_bin("full", [100, 100]), make_bin("tipped", [10, 10], alarms=["tip"]),
            make_bin("burning", [30, 30], alarms=["fire"]), make_bin("nodata", alarms=["fire"])]
    chosen, _ = select_bins(bins, sel())
    # fire before tip before full; among fires the fuller (unknown = assumed full) first
    assert [c.bin.id for c in chosen] == ["nodata", "burning", "tipped", "full"]
    nodata = chosen[0]
    assert nodata.expected_fill == 1.0 and nodata.load_l == 240.0  # unknown fill: assume full for capacity
    assert chosen[2].load_l == pytest.approx(24.0)


def test_unknown_alarm_codes_are_ignored() -> None:
    chosen, _ = select_bins([make_bin("b", [10, 10], alarms=["lamp_fail"])], sel())
    assert chosen == []


def test_expected_fill_projects_to_round_start_and_load_uses_volume() -> None:
    readings = tuple(FillReading(T0 - 12 * HOUR + k * HOUR, (50 + 2 * k) / 100) for k in range(7))
    b = BinStatus("b", "z", 52.0, 4.0, readings, frozenset(), volume_l=1000.0)
    (c,), _ = select_bins([b], sel())
    # last reading 62 % at T0-6h, rate 2 %/h -> 74 % at the round start
    assert c.fill_now == pytest.approx(0.62)
    assert c.expected_fill == pytest.approx(0.74)
    assert c.load_l == pytest.approx(740.0)


def test_skips_bins_without_location_or_data() -> None:
    bad = dataclasses.replace(make_bin("noloc", [90]), lat=float("nan"))
    far = dataclasses.replace(make_bin("far", [90]), lat=95.0)
    chosen, skipped = select_bins([bad, far, make_bin("silent")], sel())
    assert chosen == []
    assert {b for b, _ in skipped} == {"noloc", "far", "silent"}


def test_selection_has_no_people_signal() -> None:
    # The planner's input has no field for lid openings (or any personal field).
    names = {f.name for f in dataclasses.fields(BinStatus)}
    assert names == {"id", "zone", "lat", "lon", "readings", "alarms", "volume_l", "no_reading_reason"}


@pytest.mark.parametrize("kw", [{"threshold": 0.0}, {"threshold": 1.5}, {"threshold": float("nan")},
                                {"default_volume_l": 0.0}, {"default_volume_l": 1e308},
                                {"volumes_l": {"b1": 1e308}}, {"volumes_l": {"b1": -1.0}}])
def test_bad_settings(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        SelectionSettings(round_start=ROUND_START, next_round=ROUND_START + timedelta(days=1), **kw)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        SelectionSettings(round_start=ROUND_START, next_round=ROUND_START)


def test_duplicate_bin_ids_refused() -> None:
    with pytest.raises(InvalidInputError) as info:
        select_bins([make_bin("b", [90]), make_bin("b", [10])], sel())
    assert info.value.field == "bin id" and info.value.value == "b"


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(
    series=st.lists(st.lists(st.integers(0, 10), min_size=1, max_size=12), min_size=1, max_size=12),
    t1=st.integers(1, 10), t2=st.integers(1, 10), d1=st.integers(1, 3), d2=st.integers(1, 3),
)
def test_selection_is_monotone(series: list[list[int]], t1: int, t2: int, d1: int, d2: int) -> None:
    """A higher threshold never adds a bin; a longer horizon never removes one; fills stay in 0..1."""
    bins = [make_bin(f"b{i}", [10 * v for v in s]) for i, s in enumerate(series)]
    lo, hi = sorted((t1 / 10, t2 / 10))
    short, long_ = sorted((d1, d2))

    def chosen(threshold: float, days: int) -> set[str]:
        cands, _ = select_bins(bins, sel(threshold=threshold, days=days))
        for c in cands:
            assert 0.0 <= c.fill_now <= c.expected_fill <= c.predicted_next <= 1.0
            assert c.rate_per_day >= 0.0
        return {c.bin.id for c in cands}

    assert chosen(hi, short) <= chosen(lo, short)
    assert chosen(lo, short) <= chosen(lo, long_)
