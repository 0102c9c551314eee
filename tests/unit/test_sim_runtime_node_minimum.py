"""Without ``node`` or ``npm`` the simulator's messages ask for the Node.js it really needs (20.6, the
resolve hook's minimum: a wheel's runtime is outside hil/sim), not ``>= 20`` (package-install QA)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.sim import runtime
from hil.sim.runtime import HOOK_NODE_VERSION, NODE_MINIMUM, RuntimeInstallError, RuntimeMissingError


def test_the_minimum_is_the_hooks_version() -> None:
    assert NODE_MINIMUM == f"{HOOK_NODE_VERSION[0]}.{HOOK_NODE_VERSION[1]}" == "20.6"


def test_no_node_on_path_asks_for_node_20_6(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no node
    with pytest.raises(RuntimeMissingError) as info:
        runtime.node_binary()
    assert str(info.value).startswith("node is not on PATH: install Node.js >= 20.6 (")


def test_no_npm_on_path_asks_for_node_20_6(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(RuntimeInstallError) as info:
        runtime.install_runtime(tmp_path / "runtime")
    assert "npm is not on PATH: install Node.js >= 20.6 with npm" in str(info.value)
    assert not (tmp_path / "runtime").exists()  # nothing made before the check
