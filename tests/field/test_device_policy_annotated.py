"""The firmware's key lists (``_DOC_ONLY``, ``_DOC_ONLY_TOP``) are read also when written with a type annotation.

``_firmware_tuple`` matched only ``name = (...)``: a firmware tree that annotated the tuple
(``_DOC_ONLY: tuple = (...)``, valid MicroPython) had its ``_DOC_ONLY`` called missing, and its
``_DOC_ONLY_TOP`` taken for absent, so the device copy kept the text for people the firmware drops.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gateway.resources import firmware_dir, policy_path
from hil.field.device_policy import DevicePolicyError, device_policy_bytes, doc_only_keys, doc_only_top_keys


def _annotated_tree(tmp_path: Path, lines: dict[str, str]) -> Path:
    """A copy of the firmware tree whose ``civic/policy.py`` line ``name = ...`` is replaced by ``lines[name]``."""
    tree = tmp_path / "firmware"
    shutil.copytree(firmware_dir(), tree, ignore=shutil.ignore_patterns("__pycache__"))
    module = tree / "lib" / "civic" / "policy.py"
    text = module.read_text().splitlines(keepends=True)
    for name, line in lines.items():
        at = [i for i, old in enumerate(text) if old.startswith(f"{name} = ")]
        assert len(at) == 1
        text[at[0]] = line + "\n"
    module.write_text("".join(text))
    return tree


def test_annotated_key_lists_are_the_firmwares(tmp_path: Path) -> None:
    """Fails before: doc_only_keys raised 'has no _DOC_ONLY', doc_only_top_keys gave ()."""
    tree = _annotated_tree(tmp_path, {
        "_DOC_ONLY": '_DOC_ONLY: tuple = ("label", "unit", "source", "purpose", "retention_days", "valid_range")',
        "_DOC_ONLY_TOP": '_DOC_ONLY_TOP: "tuple[str, ...]" = ("statement", "not_collected", "recipients")'})
    assert doc_only_keys(tree) == doc_only_keys()
    assert doc_only_top_keys(tree) == doc_only_top_keys() == ("statement", "not_collected", "recipients")
    full = policy_path().read_bytes()
    assert device_policy_bytes(full, firmware_root=tree) == device_policy_bytes(full)
    assert "statement" not in json.loads(device_policy_bytes(full, firmware_root=tree))


@pytest.mark.parametrize("name", ["_DOC_ONLY", "_DOC_ONLY_TOP"])
def test_an_annotated_key_list_that_is_no_literal_tuple_is_refused(tmp_path: Path, name: str) -> None:
    tree = _annotated_tree(tmp_path, {name: f'{name}: list = ["label"]'})
    with pytest.raises(DevicePolicyError, match=f"has no {name} = ") as err:
        device_policy_bytes(policy_path().read_bytes(), firmware_root=tree)
    assert err.value.details["path"].endswith("lib/civic/policy.py")
