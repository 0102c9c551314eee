"""hil.field.device_policy.device_policy_bytes parses policy.json with the shared JSON parser
(gateway.small_files.loads_json): a policy nested too deeply is a DevicePolicyError saying so, as bad
JSON is, not a RecursionError (thousands deep) nor a check of a 100-deep document. Fails before."""

from __future__ import annotations

import json

import pytest

from gateway.resources import policy_path
from gateway.small_files import MAX_DEPTH
from hil.field.device_policy import DevicePolicyError, device_policy_bytes


@pytest.mark.parametrize("depth", [MAX_DEPTH + 5, 100_000])
def test_a_deeply_nested_policy_is_refused_as_bad_json(depth: int) -> None:
    # a real policy with one field's documentation nested `depth` deep: still a JSON object
    policy = json.loads(policy_path().read_text(encoding="utf-8"))
    text = json.dumps(policy)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    with pytest.raises(DevicePolicyError, match=r"^x/policy.json is not valid JSON \(nested too deeply") as info:
        device_policy_bytes(text.encode(), source="x/policy.json")
    assert info.value.details["path"] == "x/policy.json"


def test_bad_json_and_the_real_policy_are_as_before() -> None:
    with pytest.raises(DevicePolicyError, match="x/policy.json is not valid JSON"):
        device_policy_bytes(b"{not json", source="x/policy.json")
    with pytest.raises(DevicePolicyError, match="not valid JSON"):
        device_policy_bytes(b"\xff{}", source="x/policy.json")
    out = json.loads(device_policy_bytes(policy_path().read_bytes()))
    assert out["kinds"] and "statement" not in out
