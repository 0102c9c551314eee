"""The policy check warns about an ε per release whose noise samples outgrow the firmware's padding too often.

``gateway.noise_padding.exceed_probability`` computes P[a sample needs more than ``pad`` calls of
``os.urandom``] from the sampler's algorithm; here it is checked against the real firmware sampler's call
counts under MicroPython, then the warning it drives: ``check_policy`` returns it (not an error: the policy
loads), ``gateway run --check`` prints it.
"""

from __future__ import annotations

import ast
import copy
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from conftest import make_env

from gateway import resources
from gateway.noise_padding import PAD_DRAWS, RESOLUTION, exceed_probability
from gateway.policy_check import PAD_EXCEED_WARN, PolicyWarning, check_policy
from gateway.resources import firmware_dir, load_policy
from hil.cli.main import main
from hil.sim.mprun import MpResult

CALLS = """
import os, json
from civic.privacy import dlaplace
calls = [0]
def counted(n):
    calls[0] += 1
    return os.urandom(n)
out = {}
for eps, n in %r:
    hist = {}
    for _ in range(n):
        calls[0] = 0
        dlaplace.discrete_laplace(1000, eps, counted)
        hist[calls[0]] = hist.get(calls[0], 0) + 1
    out[eps] = hist
print(json.dumps(out))
"""
# ε 1.99 (scale 1000/1990 = 100/199: the largest residual of any ε up to 2), the shipped ε, the first ε that warns,
# and the smallest ε a policy allows (scale 1000: uniform(1000) draws two bytes and rejects some).
RUNS = [(1990, 12000), (500, 12000), (1170, 12000), (1, 4000)]


def test_the_exceedance_probability_matches_the_firmware_samplers_call_counts(mpy: Callable[..., MpResult]) -> None:
    out = json.loads(mpy(CALLS % (RUNS,), seed=2026).stdout.strip().splitlines()[-1])
    checked = 0
    for eps, n in RUNS:
        hist = {int(calls): count for calls, count in out[str(eps)].items()}
        assert sum(hist.values()) == n
        for pad in (3, 4, 6, 8, 12, 16, 24, 32, 48, 64):
            seen = sum(count for calls, count in hist.items() if calls > pad) / n
            p = exceed_probability(eps, pad)
            if p * n < 5:
                continue  # too rare to be seen in n samples
            # 4.5 binomial standard deviations: a false alarm about once in 150,000 comparisons
            assert abs(seen - p) <= 4.5 * math.sqrt(p * (1 - p) / n) + 1 / n, (eps, pad, seen, p)
            checked += 1
    assert checked >= 25


def test_the_padding_is_the_firmwares_and_the_probability_behaves() -> None:
    tree = ast.parse((firmware_dir() / "lib" / "civic" / "privacy" / "dlaplace.py").read_text())
    [pad] = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
             and getattr(node.targets[0], "id", "") == "PAD_DRAWS"]
    assert pad == PAD_DRAWS
    # Every sample makes at least the sign's call and one uniform(t) call: P[more than 1] = 1.
    assert exceed_probability(500, 1) == 1.0
    tails = [exceed_probability(1990, pad) for pad in (8, 16, 32, 64, 128)]
    assert tails == sorted(tails, reverse=True) and tails[-1] > 0
    # The shipped ε is far below the float resolution at the real padding; 1 needs no gcd luck to be small.
    assert exceed_probability(500) < RESOLUTION and exceed_probability(1000) < RESOLUTION
    for bad in (0, -5, True, 1.5):
        with pytest.raises(ValueError):
            exceed_probability(bad)  # type: ignore[arg-type]


def _with_eps(eps_milli: int) -> dict[str, Any]:
    policy = copy.deepcopy(load_policy())
    policy["kinds"]["bin"]["fields"]["lid"]["eps_per_release_milli"] = eps_milli
    return policy


def test_the_shipped_policy_has_no_warning() -> None:
    assert check_policy(load_policy()) == []


# Just below the threshold: the five ε up to 1.169 closest to it (2^-20.3 .. 2^-20.9) and 1.169; just above: the
# first ε over it (1.17: 2^-19.97) and the next two. Then 1.499, 1.5 and 1.501 below (2^-20.8, 2^-27.4, 2^-20.8)
# but 1.49 above (2^-17.9), 2 below (2^-45.8) but 1.99 above (2^-15.7): the residual depends on the fraction
# 1000/m, not on ε alone.
BELOW = [1130, 1110, 1090, 1165, 1070, 1169, 1499, 1500, 1501, 2000]
ABOVE = [1170, 1190, 1210, 1490, 1990]


@pytest.mark.parametrize("eps_milli", BELOW + ABOVE)
def test_a_warning_exactly_when_the_residual_is_above_the_threshold(eps_milli: int) -> None:
    p = exceed_probability(eps_milli)
    assert (p > PAD_EXCEED_WARN) == (eps_milli in ABOVE), (eps_milli, math.log2(p))
    assert 2 ** -28 < p < 2 ** -15 or eps_milli == 2000  # near the threshold: not a float-rounding call
    warnings = check_policy(_with_eps(eps_milli))
    if eps_milli in BELOW:
        assert warnings == []
        return
    [warning] = warnings
    assert isinstance(warning, PolicyWarning)
    assert warning.key == "kinds.bin.fields.lid.eps_per_release_milli"
    assert "= %d:" % eps_milli in warning.message and "128 os.urandom calls" in warning.message
    assert "2^%.1f" % math.log2(p) in warning.message and "docs/privacy.md" in warning.message


def test_the_gate_warns_for_an_epsilon_it_takes_from_defaults() -> None:
    policy = _with_eps(500)
    del policy["kinds"]["bin"]["fields"]["lid"]["eps_per_release_milli"]
    policy.setdefault("defaults", {})["eps_per_release_milli"] = 1990
    [warning] = check_policy(policy, own_bounds=False)
    assert warning.key == "kinds.bin.fields.lid.eps_per_release_milli"


@pytest.fixture
def policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], Path]]:
    """Make the gateway read its privacy policy from a file of the test's: the shipped one with the ε per release
    of ``bin.lid`` given (the load cache cleared around it)."""
    path = tmp_path / "policy.json"
    shipped = load_policy()
    monkeypatch.setattr(resources, "policy_path", lambda: path)

    def write(eps_milli: int) -> Path:
        policy = copy.deepcopy(shipped)
        policy["kinds"]["bin"]["fields"]["lid"]["eps_per_release_milli"] = eps_milli
        path.write_text(json.dumps(policy))
        load_policy.cache_clear()
        return path

    yield write
    load_policy.cache_clear()


@pytest.mark.parametrize("eps_milli", [1990, 1170, 500])
def test_run_check_prints_the_warning_and_still_passes(
        tmp_path: Path, policy_file: Callable[[int], Path], capsys: pytest.CaptureFixture[str],
        eps_milli: int) -> None:
    path = policy_file(eps_milli)
    config = make_env(tmp_path)
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 0
    out = capsys.readouterr().out
    warned = [line for line in out.splitlines() if "warning" in line and "policy" in line]
    if eps_milli == 500:
        assert warned == [], out
        return
    [line] = warned
    assert line.startswith("privacy policy %s: warning: kinds.bin.fields.lid.eps_per_release_milli = %d:"
                           % (path, eps_milli)), line
    assert "config OK" in out


@pytest.mark.parametrize("eps_milli", [1990, 500])
def test_the_gateway_logs_the_warning_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                               eps_milli: int) -> None:
    """`run` without --check: the warning `run --check` prints is in the start log (once), not only there."""
    from gateway.config import load_config
    from gateway.service import Gateway

    caplog.set_level("WARNING", logger="gateway.service")
    gw = Gateway(load_config(make_env(tmp_path)), policy=_with_eps(eps_milli))
    try:
        warned = [r.getMessage() for r in caplog.records if r.name == "gateway.service" and "privacy policy" in
                  r.getMessage()]
        if eps_milli == 500:
            assert warned == []
            return
        [line] = warned
        assert line.startswith("privacy policy: kinds.bin.fields.lid.eps_per_release_milli = 1990:"), line
    finally:
        gw.store.close()
        gw.registry.close()


@pytest.mark.parametrize("eps_milli", [1990, 500])
def test_flashing_a_policy_that_warns_says_so(caplog: pytest.LogCaptureFixture, eps_milli: int) -> None:
    """The board's copy is staged by hil.field.device_policy (flash, sim): the policy is taken and the
    technician gets the warning `gateway run --check` would print."""
    from hil.field.device_policy import device_policy_bytes

    caplog.set_level("WARNING", logger="hil.field.device_policy")
    staged = device_policy_bytes(json.dumps(_with_eps(eps_milli)), source="city-policy-%d.json" % eps_milli)
    device_policy_bytes(json.dumps(_with_eps(eps_milli)), source="city-policy-%d.json" % eps_milli)  # said once
    assert json.loads(staged)["kinds"]["bin"]["fields"]["lid"]["eps_per_release_milli"] == eps_milli
    warned = [r.getMessage() for r in caplog.records if r.name == "hil.field.device_policy"]
    if eps_milli == 500:
        assert warned == []
        return
    [line] = warned
    assert line.startswith("city-policy-1990.json: kinds.bin.fields.lid.eps_per_release_milli = 1990:"), line
