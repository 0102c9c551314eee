"""Which firmware/ and boards/ gateway.resources reads: a civicedge checkout's own, even when a stale
gateway/_bundle sits in its source tree; an installed wheel's bundle, even beside a stray firmware/."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import resources
from gateway.resources import ResourcesMissingError, locate

REPO = Path(__file__).resolve().parents[2]


def _trees(root: Path, policy: str) -> Path:
    (root / "firmware").mkdir(parents=True)
    (root / "firmware" / "policy.json").write_text(policy)
    (root / "boards").mkdir()
    return root


def test_a_checkout_is_preferred_over_a_stale_bundle_in_its_source_tree(tmp_path: Path) -> None:
    checkout = _trees(tmp_path / "checkout", '{"from": "checkout"}')
    (checkout / "pyproject.toml").write_text('[project]\nname = "civicedge"\n')
    _trees(checkout / "gateway" / "_bundle", '{"from": "stale bundle"}')
    assert locate(checkout / "gateway") == checkout


def test_an_installed_bundle_is_preferred_over_a_stray_firmware_directory(tmp_path: Path) -> None:
    site = _trees(tmp_path / "site-packages", '{"from": "stray"}')
    bundle = _trees(site / "gateway" / "_bundle", '{"from": "bundle"}')
    assert locate(site / "gateway") == bundle
    # Another project's pyproject.toml beside it does not make it a civicedge checkout.
    (site / "pyproject.toml").write_text('[project]\nname = "someone-else"\n')
    assert locate(site / "gateway") == bundle
    (site / "pyproject.toml").write_text("not toml = = =")
    assert locate(site / "gateway") == bundle


def test_a_checkout_without_pyproject_still_serves_when_there_is_no_bundle(tmp_path: Path) -> None:
    tree = _trees(tmp_path / "tree", "{}")
    (tree / "gateway").mkdir()
    assert locate(tree / "gateway") == tree


def test_neither_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "gateway").mkdir()
    with pytest.raises(ResourcesMissingError) as info:
        locate(tmp_path / "gateway")
    assert info.value.searched == (tmp_path / "gateway" / "_bundle", tmp_path)


def test_this_checkout_reads_its_own_trees() -> None:
    assert resources.project_root() == REPO
    assert resources.policy_path() == REPO / "firmware" / "policy.json"
