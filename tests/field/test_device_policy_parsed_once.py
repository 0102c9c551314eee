"""hil.field.device_policy.device_policy_bytes reads and parses the firmware's ``civic/policy.py`` once for
both key lists (``_DOC_ONLY`` and ``_DOC_ONLY_TOP``). Before, each list read and parsed the module again.
Fails before."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.resources import firmware_dir, load_policy, policy_path
from hil.field.device_policy import POLICY_MODULE, DevicePolicyError, device_policy_bytes, doc_only_top_keys


@pytest.fixture
def module_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The file names ast.parse is called with, from here on."""
    seen: list[str] = []
    real = ast.parse

    def counting(source: Any, filename: Any = "<unknown>", *args: Any, **kwargs: Any) -> Any:
        seen.append(str(filename))
        return real(source, filename, *args, **kwargs)

    monkeypatch.setattr(ast, "parse", counting)
    return seen


def test_the_firmware_module_is_parsed_once(module_parses: list[str]) -> None:
    copy = json.loads(device_policy_bytes(policy_path().read_bytes()))
    assert module_parses == [str(firmware_dir() / POLICY_MODULE)]
    # both of its lists applied: no top-level text for people, no field's label
    assert not set(doc_only_top_keys()) & set(copy) and set(copy) < set(load_policy())
    assert all("label" not in f for spec in copy["kinds"].values() for f in spec["fields"].values())


def test_an_unreadable_firmware_module_is_refused_as_before(tmp_path: Path, module_parses: list[str]) -> None:
    with pytest.raises(DevicePolicyError, match="cannot read the policy keys the firmware drops from") as err:
        device_policy_bytes(policy_path().read_bytes(), firmware_root=tmp_path)
    assert err.value.details["path"] == str(tmp_path / POLICY_MODULE) and module_parses == []
