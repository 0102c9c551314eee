"""Statistical tests of the on-device privacy mechanism, run in MicroPython.

Seeds are fixed (``os.urandom`` is a deterministic stream under ``mprun --seed``), so these
tests are deterministic; CIVICEDGE_FULL=1 raises the sample counts.

The samples are drawn with the timing padding off (``dlaplace.PAD_DRAWS = 0``): the padding's
draws come after each sample is decided and are discarded, so it never changes a sample
(test_privacy_noise_timing.py checks that sample by sample); with it on, 20 000 samples take
minutes in the simulator.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from typing import Callable

import pytest

from hil.sim.mprun import MpResult

FULL = os.environ.get("CIVICEDGE_FULL") == "1"
N = 60000 if FULL else 12000
N_PMF = 100000 if FULL else 20000  # one MicroPython run per epsilon


def _chi2_critical(df: int, z: float = 3.09) -> float:
    """Upper chi-square quantile by Wilson-Hilferty (z=3.09: p = 0.001)."""
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


def _dlap_pmf(z: int, eps: float) -> float:
    q = math.exp(-eps)
    return (1 - q) / (1 + q) * q ** abs(z)


def _samples(mpy: Callable[..., MpResult], expr: str, n: int, seed: int) -> Counter[str]:
    code = (
        "from civic.privacy import dlaplace, release\nh = {}\n"
        "dlaplace.PAD_DRAWS = 0\n"
        + f"for _ in range({n}):\n    z = {expr}\n    h[z] = h.get(z, 0) + 1\n"
        "for z in h:\n    print(z, h[z])\n"
    )
    out: Counter[str] = Counter()
    for line in mpy(code, seed=seed).stdout.splitlines():
        key, count = line.rsplit(" ", 1)
        out[key] = int(count)
    assert sum(out.values()) == n
    return out


def _chi2(hist: Counter[str], n: int, pmf: Callable[[int], float], lo: int, hi: int) -> tuple[float, int]:
    """Chi-square of the histogram against ``pmf`` with bins lo..hi and pooled tails."""
    observed = [hist.get(str(z), 0) for z in range(lo, hi + 1)]
    expected = [n * pmf(z) for z in range(lo, hi + 1)]
    tail_obs = n - sum(observed)
    tail_exp = n - sum(expected)
    observed.append(tail_obs)
    expected.append(tail_exp)
    assert min(expected) >= 5, "bins too thin for chi-square"
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected))
    return stat, len(observed) - 1


@pytest.mark.parametrize("eps_milli, seed", [(500, 11), (1500, 12)])
def test_sampler_matches_discrete_laplace_pmf(mpy: Callable[..., MpResult], eps_milli: int, seed: int) -> None:
    hist = _samples(mpy, f"dlaplace.noise_for_milli_eps({eps_milli})", N_PMF, seed)
    eps = eps_milli / 1000
    span = 7 if eps_milli == 500 else 3
    stat, df = _chi2(hist, N_PMF, lambda z: _dlap_pmf(z, eps), -span, span)
    assert stat < _chi2_critical(df), (stat, df, hist)
    # symmetric and centred: the mean is within 4 standard errors of 0
    mean = sum(int(k) * v for k, v in hist.items()) / N
    var = 2 * math.exp(-eps) / (1 - math.exp(-eps)) ** 2
    assert abs(mean) < 4 * math.sqrt(var / N_PMF)


def test_chi_square_detects_a_wrong_scale(mpy: Callable[..., MpResult]) -> None:
    """The chi-square check has power: samples at eps=0.5 fail against the eps=0.6 PMF."""
    hist = _samples(mpy, "dlaplace.noise_for_milli_eps(500)", N, 13)
    stat, df = _chi2(hist, N, lambda z: _dlap_pmf(z, 0.6), -7, 7)
    assert stat > _chi2_critical(df)


def test_bernoulli_exp_above_one(mpy: Callable[..., MpResult]) -> None:
    n = 8000
    hist = _samples(mpy, "dlaplace.bernoulli_exp(7, 3)", n, 14)
    p = math.exp(-7 / 3)
    hits = hist.get("True", 0)
    assert abs(hits - n * p) < 4 * math.sqrt(n * p * (1 - p)), hits


def _binom_bounds(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def test_likelihood_ratio_of_neighbouring_counts_within_eps(mpy: Callable[..., MpResult]) -> None:
    """Outputs for true counts c and c+1 (with suppression at k=5) differ by at most e^eps.

    For every output (a released value, or None = suppressed) with enough mass, the lower
    confidence bound of P[out|c] / P[out|c+1] (and the reverse) must not exceed e^eps
    (Wilson bounds, z=3.3 per bin, i.e. about 99.9 %). Suppression never emits a value < k.
    """
    eps = 0.5
    a = _samples(mpy, "release.noisy_count(6, 500, 5)", N, 21)
    b = _samples(mpy, "release.noisy_count(7, 500, 5)", N, 22)
    for hist in (a, b):
        assert all(k == "None" or int(k) >= 5 for k in hist), hist
    checked = 0
    worst = 0.0
    for out in set(a) | set(b):
        ka, kb = a.get(out, 0), b.get(out, 0)
        if min(ka, kb) < 30:
            continue
        la, ha = _binom_bounds(ka, N, 3.3)
        lb, hb = _binom_bounds(kb, N, 3.3)
        assert la / hb <= math.exp(eps), (out, ka, kb)
        assert lb / ha <= math.exp(eps), (out, ka, kb)
        worst = max(worst, ka / kb, kb / ka)
        checked += 1
    assert checked >= 8
    # the mechanism is not trivially private either: the observed ratio approaches e^eps
    assert worst > math.exp(eps) * 0.85, worst


def test_suppression_uses_the_noisy_value(mpy: Callable[..., MpResult]) -> None:
    """A true count of 2 (< k) is still sometimes released; a true 8 is sometimes suppressed."""
    low = _samples(mpy, "release.noisy_count(2, 500, 5)", 4000, 31)
    high = _samples(mpy, "release.noisy_count(8, 500, 5)", 4000, 32)
    assert all(k == "None" or int(k) >= 5 for k in list(low) + list(high))
    assert sum(v for k, v in low.items() if k != "None") > 0
    assert high.get("None", 0) > 0
