"""HTML report plots: stimulus lanes, including stretches without a number ("none", "auto")."""

from __future__ import annotations

import datetime as dt
import math
import re

from hil.scenarios.reports import _lane, stimulus_series

T0 = 1_700_000_000_000
MIN = 60_000


def test_distance_none_is_a_labelled_gap_not_the_last_distance() -> None:
    doc = {"set": {"distance": 700}, "at": [{"time": "+10m", "distance": "none"}, {"time": "+20m", "distance": 300}]}
    (lane,), _ = stimulus_series(doc, T0, T0 + 30 * MIN)
    assert [t for t, _ in lane.points] == [T0, T0 + 10 * MIN, T0 + 20 * MIN]
    assert math.isnan(lane.points[1][1]) and lane.labels == {T0 + 10 * MIN: "none"}
    svg = "\n".join(_lane(lane, 0.0, T0, T0 + 30 * MIN, "#000"))
    lines = re.findall(r'<polyline points="([^"]*)"', svg)
    assert len(lines) == 2, svg  # the line breaks at the no-echo stretch instead of holding 700 through it
    xs = [[float(p.split(",")[0]) for p in pts.split()] for pts in lines]
    gap = re.search(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg)
    assert gap is not None
    start, width = float(gap.group(1)), float(gap.group(2))
    assert max(xs[0]) == start and abs(min(xs[1]) - (start + width)) < 0.2  # the band fills the gap
    assert ">none</text>" in svg and "300 … 700, none" in svg


def test_lamp_current_auto_and_a_lane_of_words_only() -> None:
    doc = {"set": {"lamp_current": "auto"}, "at": [{"time": "+5m", "every": "5m", "until": "+15m",
                                                    "lamp_current": "auto"}]}
    (lane,), _ = stimulus_series(doc, T0, T0 + 20 * MIN)
    assert all(math.isnan(v) for _, v in lane.points)
    svg = "\n".join(_lane(lane, 0.0, T0, T0 + 20 * MIN, "#000"))
    assert "<polyline" not in svg and svg.count("<rect") == 1  # one band for one stretch of "auto"
    assert svg.count(">auto</text>") == 2  # the band's word and the lane's range text


def test_a_later_value_at_the_same_time_wins() -> None:
    doc = {"set": {"distance": 700}, "at": [{"time": "+0m", "distance": "none"}]}
    (lane,), _ = stimulus_series(doc, T0, T0 + 10 * MIN)
    assert lane.points[0][1] == 700 and math.isnan(lane.points[-1][1])


def test_the_last_axis_label_is_not_cut_off() -> None:
    """The last tick sits on the axis' right end, 20 px from the SVG's edge: a centred `11-22 00:20` (with the
    date, the span crosses midnight) ran past it and showed as `11-22 00:2`."""
    from hil.scenarios.reports import WIDTH, board_svg

    char_px = 6.0  # a digit of a 10 px sans-serif label is about 5.5 px wide

    t0 = int(dt.datetime(2026, 11, 21, 23, 20, tzinfo=dt.timezone.utc).timestamp() * 1000)
    svg = board_svg([], [], [], t0, t0 + 60 * MIN)  # to 00:20 the next day
    labels = re.findall(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="(\w+)" class="rng">([^<]*)</text>', svg)
    assert labels and labels[-1][2] == "11-22 00:20", labels
    for x, anchor, text in labels:
        width = len(text) * char_px
        left = {"start": float(x), "middle": float(x) - width / 2, "end": float(x) - width}[anchor]
        assert 0 <= left and left + width <= WIDTH, (x, anchor, text)
