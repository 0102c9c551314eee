"""Property tests of civic.sense against CPython reference definitions.

Hypothesis generates batches of cases in CPython; each batch runs in ONE MicroPython process
(a process start costs ~0.3 s) and every result is compared with the reference here.
CIVICEDGE_FULL=1 runs more and larger batches.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.sim.mprun import MpResult

Mpy = Callable[..., MpResult]
FULL = os.environ.get("CIVICEDGE_FULL") == "1"
BATCHES = 10 if FULL else 2
BATCH = 400 if FULL else 120
SETTINGS = settings(max_examples=BATCHES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run_cases(mpy: Mpy, call: str, cases: list[Any]) -> list[Any]:
    code = f"""
import json
from civic.sense import convert, ultrasonic
out = []
for c in json.loads({json.dumps(json.dumps(cases))}):
    out.append({call})
print(json.dumps(out))
"""
    return json.loads(mpy(code).stdout.strip().splitlines()[-1])


def ref_round(num: int, den: int) -> int:
    """Nearest integer to num/den, halves away from zero."""
    q = Fraction(num, den)
    n = abs(q)
    r = int(n) + (1 if n - int(n) >= Fraction(1, 2) else 0)
    return r if q >= 0 else -r


@SETTINGS
@given(st.lists(st.tuples(st.integers(-10**9, 10**9), st.integers(1, 10**6)), min_size=BATCH, max_size=BATCH))
def test_round_div_matches_exact_rounding(mpy: Mpy, cases: list[tuple[int, int]]) -> None:
    got = run_cases(mpy, "convert.round_div(c[0], c[1])", cases)
    assert got == [ref_round(n, d) for n, d in cases]


@SETTINGS
@given(st.lists(st.tuples(st.integers(-10**6, 10**6), st.sampled_from([1, 2, 5, 10, 25, 100])),
                min_size=BATCH, max_size=BATCH))
def test_quantise_is_nearest_multiple(mpy: Mpy, cases: list[tuple[int, int]]) -> None:
    got = run_cases(mpy, "convert.quantise(c[0], c[1])", cases)
    for (v, q), g in zip(cases, got):
        assert g % q == 0 and abs(g - v) * 2 <= q
        if q > 1 and abs(g - v) * 2 == q:
            assert g > v                                   # halves round up


@SETTINGS
@given(st.lists(st.lists(st.integers(-5000, 5000), min_size=1, max_size=15), min_size=BATCH, max_size=BATCH))
def test_median_matches_reference(mpy: Mpy, cases: list[list[int]]) -> None:
    got = run_cases(mpy, "ultrasonic.median(c)", cases)
    for values, g in zip(cases, got):
        s = sorted(values)
        n = len(s)
        assert g == (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2)


@SETTINGS
@given(st.lists(st.tuples(st.lists(st.integers(-1, 30000), min_size=1, max_size=9), st.integers(0, 500)),
                min_size=BATCH, max_size=BATCH))
def test_robust_distance_is_an_inlier_median_or_refuses(mpy: Mpy, cases: list[tuple[list[int], int]]) -> None:
    got = run_cases(mpy, "ultrasonic.robust_mm(c[0], c[1])", cases)
    for (pings, outlier), g in zip(cases, got):
        dist = [t * 343 // 2000 for t in pings if t > 0]
        need = len(pings) // 2 + 1
        if g is None:
            continue
        assert len(dist) >= need
        assert min(dist) <= g <= max(dist)
        inliers = [d for d in dist if abs(d - g) <= 2 * outlier + 1]
        assert len(inliers) >= need                        # a majority agrees with the answer


TABLE = [[129084, 120], [215172, 100], [493838, 70], [1835632, 20], [2543476, 0], [3014000, -20]]


@SETTINGS
@given(st.lists(st.integers(0, 3300000), min_size=BATCH, max_size=BATCH))
def test_thermistor_interpolation_is_monotone_and_within_segment(mpy: Mpy, cases: list[int]) -> None:
    got = run_cases(mpy, f"convert.deci_c_from_uv(c, {TABLE})", cases)
    pairs = sorted(zip(cases, got))
    for (u0, t0), (u1, t1) in zip(pairs, pairs[1:]):
        assert t1 <= t0 or u1 == u0                         # more volts, colder (NTC on the low side)
    for uv, deci in zip(cases, got):
        assert -200 <= deci <= 1200
        for (xa, ya), (xb, yb) in zip(TABLE, TABLE[1:]):
            if xa <= uv <= xb:
                exact = Fraction(ya * 10) + Fraction((yb - ya) * 10 * (uv - xa), xb - xa)
                assert abs(deci - exact) <= Fraction(1, 2)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 3300000), st.integers(0, 3000)), min_size=BATCH, max_size=BATCH))
def test_battery_and_fill_stay_in_range(mpy: Mpy, cases: list[tuple[int, int]]) -> None:
    got = run_cases(mpy, "[convert.battery_pct(c[0], 2, 1, 3300, 4150), convert.fill_pct(c[1], 1000, 150)]", cases)
    for (uv, mm), (bat, fill) in zip(cases, got):
        assert 0 <= bat <= 100 and 0 <= fill <= 100
        mv = uv * 2 // 1000
        assert bat == max(0, min(100, (mv - 3300) * 100 // 850))
        assert fill == max(0, min(100, (1000 - mm) * 100 // 850))
