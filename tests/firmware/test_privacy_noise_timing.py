"""The noise sampler's work does not depend on the sample (privacy audit LOW-1).

The exact discrete-Laplace sampler makes more ``os.urandom`` calls the larger the geometric part of
its sample, so the time a release took told about its noise (Jin et al., IEEE S&P 2022).
``noise_for_milli_eps`` pads every sample to ``PAD_DRAWS`` calls. The MicroPython tests count the
calls through a wrapped byte source; the host test bounds, from the sampler's structure, the
probability that a sample needs more than ``PAD_DRAWS`` draws (the residual docs/privacy.md §2 states).
"""

from __future__ import annotations

import ast
import json
import math
from typing import Callable

from gateway.resources import firmware_dir
from hil.sim.mprun import MpResult

COUNT = """
import os
from civic.privacy import dlaplace
calls = [0]
def counted(n):
    calls[0] += 1
    return os.urandom(n)
out = {}
for eps, n in %r:
    per = {}
    for _ in range(n):
        calls[0] = 0
        z = dlaplace.noise_for_milli_eps(eps, counted, pad=%s)
        a = min(abs(z) * eps // 500, 9)   # |Z| in units of half the scale
        per.setdefault(a, []).append(calls[0])
    out[eps] = [[a, min(c), max(c), sum(c) // len(c)] for a, c in sorted(per.items())]
print(json.dumps([dlaplace.PAD_DRAWS, out]))
"""


def _counts(mpy: Callable[..., MpResult], runs: list[tuple[int, int]], pad: str, seed: int) -> tuple[int, dict[str, list[list[int]]]]:
    res = mpy("import json\n" + COUNT % (runs, pad), seed=seed)
    k, out = json.loads(res.stdout.strip().splitlines()[-1])
    return k, out


def test_every_sample_makes_the_same_number_of_draws(mpy: Callable[..., MpResult]) -> None:
    # epsilon 0.5 (the shipped policy), 0.001 (the smallest a policy allows), 1.5
    k, out = _counts(mpy, [(500, 800), (1, 200), (1500, 200)], "None", 41)
    assert k == 128
    for eps, rows in out.items():
        sizes = [row[0] for row in rows]
        assert len(sizes) >= 4, (eps, sizes)             # samples of different |Z| were drawn
        assert all(row[1] == row[2] == k for row in rows), (eps, rows)


def test_without_the_padding_the_draws_grow_with_the_noise(mpy: Callable[..., MpResult]) -> None:
    """What the padding hides: unpadded, a larger |Z| takes more draws (so the test above can fail)."""
    k, out = _counts(mpy, [(500, 1500)], "0", 42)
    rows = {row[0]: row for row in out["500"]}
    assert rows[0][3] + 4 <= rows[9][3], rows             # mean draws at |Z| = 0 vs |Z| >= 9
    assert max(row[2] for row in rows.values()) < k       # and these samples all fit in the padding


SAME = """
import os
from civic.privacy import dlaplace
class Stream:
    # a byte source replaying fixed bytes: both samplers see the same randomness
    def __init__(self, data):
        self.data, self.at, self.calls = data, 0, 0
    def __call__(self, n):
        self.at += n
        self.calls += 1
        return self.data[self.at - n:self.at]
same = 0
raw_max = 0
for eps in (500, 1, 1500):
    for _ in range(400):
        data = os.urandom(1024)
        a, b = Stream(data), Stream(data)
        z = dlaplace.noise_for_milli_eps(eps, a)
        w = dlaplace.discrete_laplace(1000, eps, b)
        same += z == w and a.calls == dlaplace.PAD_DRAWS
        raw_max = max(raw_max, b.calls)
print(same, raw_max)
"""


def test_the_padding_never_changes_a_sample(mpy: Callable[..., MpResult]) -> None:
    """The padded sampler returns what the unpadded one returns from the same bytes: the padding
    only draws after the sample is decided, so the distribution tests of the sampler hold for it."""
    same, raw_max = mpy(SAME, seed=43).stdout.split()
    assert int(same) == 1200
    assert 0 < int(raw_max) < 128


# -- the residual: a host-side bound on P[draws > PAD_DRAWS] from the sampler's structure ----------


def _pad_draws() -> int:
    src = (firmware_dir() / "lib" / "civic" / "privacy" / "dlaplace.py").read_text()
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PAD_DRAWS":
            value = ast.literal_eval(node.value)
            assert isinstance(value, int)
            return value
    raise AssertionError("PAD_DRAWS not found")


def _g(n: int, z: float) -> float:
    """Generating function of the draws of ``uniform(n)``: none for n == 1, else geometric attempts."""
    if n == 1:
        return 1.0
    span = 1
    while span < n:
        span <<= 8
    p = (span - span % n) / span
    return p * z / (1 - (1 - p) * z)


def _bernoulli_exp(num: int, den: int, z: float) -> tuple[float, float]:
    """E[z^draws; True], E[z^draws; False] of ``bernoulli_exp(num, den)`` for num <= den."""
    odd = even = 0.0
    pre, k = 1.0, 1
    while pre > 1e-300 and k < 400:
        c = num / (den * k)
        gk = _g(den * k, z)
        if k % 2:
            odd += pre * (1 - c) * gk
        else:
            even += pre * (1 - c) * gk
        pre *= c * gk
        k += 1
    return odd, even


def _log2_tail(eps_milli: int, k: int) -> float:
    """log2 of a Chernoff bound on P[the sampler makes more than k draws] at eps_milli/1000.

    A round of ``discrete_laplace`` draws the geometric part (U accepted w.p. exp(-U/t), then V) and a
    sign; it restarts when the sample is -0 (U + t*V < s and the sign says minus). With A(z), B(z) the
    generating functions of an accepted and a restarted round, E[z^N] = A / (1 - B), and
    P[N > k] <= E[z^N] / z^k for every z > 1 where it converges.
    """
    g = math.gcd(1000, eps_milli)
    t, s = 1000 // g, eps_milli // g
    best = 0.0
    for i in range(1, 61):
        z = 1 + i / 100
        gt = _g(t, z)
        u_end, rej = [], 0.0
        for u in range(t):
            odd, even = _bernoulli_exp(u, t, z)
            u_end.append(odd * gt / t)
            rej += even * gt / t
        true, false = _bernoulli_exp(1, 1, z)
        if rej >= 1 or true >= 1:
            break
        u_end = [x / (1 - rej) for x in u_end]
        total = sum(u_end) * false / (1 - true)
        restart, v = 0.0, 0
        while t * v < s:
            restart += sum(u_end[:min(t, s - t * v)]) * true ** v * false
            v += 1
        b = z / 2 * restart
        if b >= 1:
            break
        a = z * total - b
        best = min(best, math.log2(a / (1 - b)) - k * math.log2(z))
    return best


def test_a_sample_needs_more_draws_than_the_padding_with_negligible_probability() -> None:
    k = _pad_draws()
    # the shipped policy's epsilon (0.5), the smallest a policy allows (0.001), and 1: the bound
    # docs/privacy.md section 2 gives
    assert _log2_tail(500, k) < -40
    assert _log2_tail(1, k) < -45
    assert _log2_tail(1000, k) < -64
    # the bound is not vacuous: with a tenth of the padding it says nothing useful
    assert _log2_tail(500, k // 10) > -10
