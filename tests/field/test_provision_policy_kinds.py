"""`civicedge provision` takes every kind of the policy, as the gateway registry does (QA: a third
kind, `air`, added to firmware/policy.json was refused: hil/field/identity.py listed two kinds)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway.resources as resources
from gateway.registry import Registry
from hil.field.errors import IdentityFormatError
from hil.field.identity import kinds, new_identity, validate_fields

AIR = {"title": "Air-quality sensor", "window_s": 900, "alarms": {}, "config": [],
       "fields": {"pm25": {"label": "PM2.5 (window mean)", "unit": "µg/m³", "personal": False,
                           "valid_range": [0, 1000], "source": "PM2.5 particle sensor", "release": "aggregate",
                           "report": "win", "quantum": 1, "retention_days": 730, "purpose": "air quality"}}}


@pytest.fixture
def air_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The shipped policy with an `air` kind, read by everything that reads the policy."""
    policy = json.loads(resources.policy_path().read_text())
    policy["kinds"]["air"] = AIR
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    monkeypatch.setattr(resources, "policy_path", lambda: path)
    resources.load_policy.cache_clear()
    yield
    resources.load_policy.cache_clear()


@pytest.mark.usefixtures("air_policy")
def test_a_kind_of_the_policy_is_provisioned_and_registered(tmp_path: Path) -> None:
    assert kinds() == ["air", "bin", "streetlight"]
    validate_fields(device_id="air-1", zone="centre", kind="air")
    ident = new_identity(device_id="air-1", kind="air", zone="centre", lat="52.1", lon="4.2")
    assert json.loads(ident.to_json_bytes())["kind"] == "air"
    record = Registry(tmp_path / "registry").add(ident.id, kind=ident.kind, zone=ident.zone, lat=ident.lat,
                                                 lon=ident.lon, key=ident.key)
    assert record.kind == "air"


@pytest.mark.usefixtures("air_policy")
def test_a_kind_not_in_the_policy_is_refused_naming_the_policy_kinds() -> None:
    with pytest.raises(IdentityFormatError, match="kind 'water' must be one of air, bin, streetlight"):
        validate_fields(device_id="w-1", zone="centre", kind="water")
