"""How often the firmware's noise sampler needs more ``os.urandom`` calls than its padding hides.

``civic.privacy.dlaplace.noise_for_milli_eps`` pads every sample to ``PAD_DRAWS`` (128) calls of the byte
source; a sample that needs more calls is not padded, and the time of its release tells about its noise
(docs/privacy.md §2). :func:`exceed_probability` computes that probability for ε = m/1000 from the
sampler's own algorithm (read from the firmware source: uniform, bernoulli, bernoulli_exp, geometric_exp,
discrete_laplace), by its probability generating functions truncated at degree ``pad``.

With ``W_n(z)`` the calls of ``uniform(n)`` (none for n = 1, else geometric attempts of success
``p_n = (B - B mod n)/B``, ``B`` the least power of 256 >= n: ``p_n z / (1 - (1 - p_n) z)``),
``P_k = W_{t} W_{2t} ... W_{kt}`` and ``c_j(u) = u/(t j)``, one ``bernoulli_exp(u, t)`` (u < t) ends after
``k`` rounds with probability ``a_k(u) = c_1...c_{k-1} (1 - c_k)`` and answers True for odd ``k``::

    T_u(z) = sum_{k odd} a_k(u) P_k(z),   F_u(z) = sum_{k even} a_k(u) P_k(z)

For the scale 1000/m reduced to t/s, ``geometric_exp(s, t)`` retries ``uniform(t)`` and its
``bernoulli_exp``: accepted with U = u after ``L W_t T_u / t`` (``L = 1/(1 - W_t sum_u F_u / t)``); then
``V`` counts ``bernoulli_exp(1, 1)`` successes (``E_1 = T``, ``E_0 = F`` of it, at t = 1): ``E_1^v E_0``.
A round ends with the sign's one call (z/2 each way) and is restarted when the sample is "-0" (the sign
says minus and ``u + t v < s``)::

    Round(z)   = z L W_t (sum_u T_u / t) E_0 / (1 - E_1)
    Restart(z) = z/2 sum_{v: t v < s} L W_t (sum_{u < min(t, s - t v)} T_u / t) E_1^v E_0
    N(z)       = (Round - Restart) / (1 - Restart)
    P[draws > pad] = 1 - sum_{n <= pad} [z^n] N(z)

Every series is summed to degree ``pad`` (each loop round makes at least one call, so nothing is cut
but the ``k`` loop of ``bernoulli_exp`` after :data:`K_MAX` rounds, whose mass, at most 1/(K_MAX-1)!,
is counted as exceeding, so the cut can only raise the answer). The result is exact up to float rounding,
well within :data:`RESOLUTION` (sums of non-negative terms but for Round - Restart, where Restart is at most
about half of Round). ``tests/gateway/test_policy_padding_warning.py`` checks it against the real firmware
sampler's call counts under MicroPython.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

PAD_DRAWS = 128
"""``civic.privacy.dlaplace.PAD_DRAWS`` (a test compares the two)."""
K_MAX = 30
"""Rounds of ``bernoulli_exp``'s loop summed: reaching round 30 has probability at most 1/29! < 2^-100."""
RESOLUTION = 2.0 ** -40
"""Below this an answer of :func:`exceed_probability` is float rounding, not a probability."""

Series = list[float]


def _mul(a: Series, b: Series, n: int) -> Series:
    """The product of two power series, to degree ``n - 1``."""
    out = [0.0] * n
    for i, x in enumerate(a):
        if x:
            for j in range(n - i):
                out[i + j] += x * b[j]
    return out


def _add(a: Series, b: Series, scale: float = 1.0) -> Series:
    return [x + scale * y for x, y in zip(a, b)]


def _inverse_of_one_minus(r: Series, n: int) -> Series:
    """``1 / (1 - r)`` to degree ``n - 1``, for ``r`` without a constant term (every loop round makes a call)."""
    assert r[0] == 0.0
    out = [0.0] * n
    out[0] = 1.0
    for d in range(1, n):
        out[d] = sum(r[j] * out[d - j] for j in range(1, d + 1))
    return out


def _uniform_calls(m: int, n: int) -> Series:
    """``W_m``: the calls of ``uniform(m)``, to degree ``n - 1`` (rejection on whole bytes, as the firmware)."""
    out = [0.0] * n
    if m == 1:
        out[0] = 1.0
        return out
    span = 1
    while span < m:
        span <<= 8
    p = (span - span % m) / span
    miss = 1.0
    for d in range(1, n):
        out[d] = miss * p
        miss *= 1 - p
    return out


def _bernoulli_exp_parts(nums: list[int], t: int, n: int) -> list[tuple[list[float], Series]]:
    """``(a_k(u) for u in nums, P_k)`` for k = 1..K_MAX, of ``bernoulli_exp(u, t)`` with u <= t (module docstring)."""
    parts = []
    prod = _uniform_calls(1, n)  # P_0 = 1
    reach = [1.0] * len(nums)  # c_1...c_{k-1} for each u
    for k in range(1, K_MAX + 1):
        prod = _mul(prod, _uniform_calls(t * k, n), n)
        parts.append(([r * (1 - u / (t * k)) for r, u in zip(reach, nums)], prod))
        reach = [r * u / (t * k) for r, u in zip(reach, nums)]
    return parts


def _ends(parts: list[tuple[list[float], Series]], weights: list[float], odd: bool, n: int) -> Series:
    """``sum_u weights[u] T_u`` (``odd``) or ``... F_u``, to degree ``n - 1``."""
    out = [0.0] * n
    for k, (ends, prod) in enumerate(parts, start=1):
        if k % 2 == odd:
            out = _add(out, prod, sum(w * e for w, e in zip(weights, ends)))
    return out


@lru_cache(maxsize=256)
def exceed_probability(eps_milli: int, pad: int = PAD_DRAWS) -> float:
    """P[one sample of ``noise_for_milli_eps(eps_milli)`` needs more than ``pad`` calls of ``os.urandom``].

    Computed from the sampler's algorithm by its generating functions (module docstring); exact up to
    float rounding: a result below :data:`RESOLUTION` means "below 2^-40". Depends on the reduced
    fraction t/s = 1000/m of the scale, not on ε alone (ε 1 = 1000/1000 needs few calls, ε 0.999 many).

    Raises:
        ValueError: ``eps_milli`` or ``pad`` is not a whole number >= 1.
    """
    if type(eps_milli) is not int or eps_milli < 1 or type(pad) is not int or pad < 1:
        raise ValueError("eps_milli and pad must be whole numbers >= 1")
    n = pad + 1
    g = gcd(1000, eps_milli)
    t, s = 1000 // g, eps_milli // g
    parts = _bernoulli_exp_parts(list(range(t)), t, n)
    uniform_t = _uniform_calls(t, n)
    each = [1.0 / t] * t
    rejected = _mul(uniform_t, _ends(parts, each, False, n), n)
    tries = _mul(_inverse_of_one_minus(rejected, n), uniform_t, n)  # L W_t
    # bernoulli_exp(1, 1): E_1 (True) and E_0 (False)
    one = _bernoulli_exp_parts([1], 1, n)
    e1, e0 = _ends(one, [1.0], True, n), _ends(one, [1.0], False, n)
    sign = [0.0] * n
    sign[1] = 1.0
    accepted = _mul(tries, _ends(parts, each, True, n), n)
    geometric_v = _mul(_inverse_of_one_minus(e1, n), e0, n)
    round_ = _mul(_mul(accepted, geometric_v, n), sign, n)
    restart = [0.0] * n
    e1_v = _uniform_calls(1, n)  # E_1^v
    v = 0
    while t * v < s and any(e1_v):
        below = min(t, s - t * v)
        low = _mul(tries, _ends(parts, [1.0 / t if u < below else 0.0 for u in range(t)], True, n), n)
        restart = _add(restart, _mul(_mul(_mul(low, e1_v, n), e0, n), sign, n), 0.5)
        e1_v = _mul(e1_v, e1, n)
        v += 1
    done = _mul(_add(round_, restart, -1.0), _inverse_of_one_minus(restart, n), n)
    return max(0.0, 1.0 - sum(done))
