"""The range a CSV's rows are looked up over reaches back the longest period a stored value can have,
the policy's default window included (a kind without its own ``window_s`` uses it)."""

from __future__ import annotations

import copy

from gateway.resources import load_policy
from gateway.web.source import StoreFleetSource


def _longest(policy: dict) -> int:
    return StoreFleetSource(store=None, registry=None, policy=policy)._max_period_s()  # noqa: SLF001


def test_a_day_at_least_with_the_shipped_policy() -> None:
    assert _longest(load_policy()) == 86400


def test_a_default_window_longer_than_a_day_is_counted() -> None:
    policy = copy.deepcopy(load_policy())
    policy.setdefault("defaults", {})["window_s"] = 2 * 86400
    for kspec in policy["kinds"].values():
        kspec.pop("window_s", None)
    assert _longest(policy) == 2 * 86400


def test_a_kinds_own_window_longer_than_a_day_is_counted() -> None:
    policy = copy.deepcopy(load_policy())
    next(iter(policy["kinds"].values()))["window_s"] = 3 * 86400
    assert _longest(policy) == 3 * 86400
