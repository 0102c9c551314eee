"""Exact discrete Laplace sampling with integers only (Canonne, Kamath, Steinke 2020).

All randomness comes from ``os.urandom`` (ESP32 hardware RNG: truly random only while the
radio is on or the bootloader RNG source is enabled; see docs/privacy.md). Uniform integers
are drawn by rejection sampling on whole bytes, so there is no modulo bias. Parameters are
rationals ``num/den`` with positive ints; nothing here uses floats, ``math`` or ``random``.

The sampler's number of draws grows with the geometric part of the sample (and its rejections), so
its running time would tell about the noise (a timing side channel: Jin et al., IEEE S&P 2022).
:func:`noise_for_milli_eps` therefore pads every sample to ``PAD_DRAWS`` calls of the byte source:
the draws after the sample is decided are discarded, so the output (and its distribution) is the
unpadded sampler's. A sample needing more than ``PAD_DRAWS`` draws is not padded; docs/privacy.md
section 2 gives that residual probability per epsilon. The padding makes the NUMBER of calls
constant, not the time: a padding draw costs less than a sampler draw (about a third under
MicroPython), so most of the noise-dependent time difference remains (docs/privacy.md section 2
gives the measurement and the mitigation that is still missing).
"""

import gc
import os

# Calls of the byte source per noise sample (see the module docstring and docs/privacy.md §2).
PAD_DRAWS = 128
# A garbage collection after every this many draws of a sample: each draw leaves a bytes object
# (128 of them: about 4 KB on a board). The collections come at fixed draw numbers, so how many
# run does not depend on the sample either.
GC_EVERY = 32


def _check_ratio(num, den):
    if not isinstance(num, int) or not isinstance(den, int) or num < 0 or den < 1:
        raise ValueError("dlaplace: need int num >= 0 and int den >= 1")


def uniform(n, rand=os.urandom):
    """Return a uniformly random int in ``[0, n)`` (``n`` >= 1) by rejection sampling."""
    if not isinstance(n, int) or n < 1:
        raise ValueError("dlaplace: uniform needs an int n >= 1")
    if n == 1:
        return 0
    nbytes = 0
    span = 1
    while span < n:
        span <<= 8
        nbytes += 1
    limit = span - span % n  # accept only [0, limit) so every residue is equally likely
    while True:
        x = int.from_bytes(rand(nbytes), "big")
        if x < limit:
            return x % n


def bernoulli(num, den, rand=os.urandom):
    """Return True with probability ``num/den`` (0 <= num <= den)."""
    _check_ratio(num, den)
    if num > den:
        raise ValueError("dlaplace: bernoulli needs num <= den")
    return uniform(den, rand) < num


def bernoulli_exp(num, den, rand=os.urandom):
    """Return True with probability ``exp(-num/den)`` exactly (CKS 2020, Algorithm 1)."""
    _check_ratio(num, den)
    while num > den:
        # exp(-g) = exp(-1)^floor(g) * exp(-(g - floor(g))): fail fast on any exp(-1) trial
        if not bernoulli_exp(1, 1, rand):
            return False
        num -= den
    k = 1
    while bernoulli(num, den * k, rand):
        k += 1
    return k % 2 == 1


def geometric_exp(num, den, rand=os.urandom):
    """Return X >= 0 with P[X = x] = (1 - exp(-num/den)) * exp(-x*num/den), num >= 1.

    Uses CKS 2020 Algorithm 2's geometric step (scale den/num): X = U + den*V with
    U uniform in [0, den) accepted w.p. exp(-U/den) and V ~ Geometric(1 - exp(-1)),
    then divided by num.
    """
    _check_ratio(num, den)
    if num < 1:
        raise ValueError("dlaplace: geometric needs num >= 1")
    while True:
        u = uniform(den, rand)
        if bernoulli_exp(u, den, rand):
            break
    v = 0
    while bernoulli_exp(1, 1, rand):
        v += 1
    return (u + den * v) // num


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def discrete_laplace(scale_num, scale_den, rand=os.urandom):
    """Sample Z with P[Z = z] proportional to ``exp(-|z| * scale_den / scale_num)``.

    The scale is ``t = scale_num/scale_den``; for epsilon-DP on a count (sensitivity 1)
    use ``t = 1/epsilon``, e.g. epsilon = m/1000 -> ``discrete_laplace(1000, m)``.
    CKS 2020 Algorithm 2, exact, integers only.
    """
    _check_ratio(scale_num, scale_den)
    if scale_num < 1:
        raise ValueError("dlaplace: scale must be > 0")
    g = _gcd(scale_num, scale_den)
    t = scale_num // g
    s = scale_den // g
    while True:
        y = geometric_exp(s, t, rand)
        if bernoulli(1, 2, rand):
            if y == 0:
                continue  # reject -0 so that 0 is not counted twice
            return -y
        return y


def noise_for_milli_eps(eps_milli, rand=os.urandom, pad=None):
    """Discrete Laplace noise giving ``eps_milli``/1000-DP for a sensitivity-1 count.

    Calls ``rand`` ``pad`` times (None: ``PAD_DRAWS``) whatever the sample, more only if the
    sample itself needs more: the draws left over are made and discarded after the sample is
    decided, so they do not change it. Only the number of ``rand`` calls is constant: the time
    still depends on the noise (a padding draw is cheaper than a sampler draw; docs/privacy.md
    section 2), so this alone does not close the timing side channel.
    """
    if not isinstance(eps_milli, int) or eps_milli < 1:
        raise ValueError("dlaplace: eps_milli must be an int >= 1")
    if pad is None:
        pad = PAD_DRAWS
    drawn = [0]

    def counted(n):
        drawn[0] += 1
        if drawn[0] % GC_EVERY == 0:
            gc.collect()
        return rand(n)

    z = discrete_laplace(1000, eps_milli, counted)
    while drawn[0] < pad:
        int.from_bytes(counted(2), "big")  # the work of one draw of uniform(); the value is discarded
    return z
