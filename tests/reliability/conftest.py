"""Fixtures of the reliability suite. Reuses the gateway suite's helpers (tests/gateway) by import."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

from gateway.registry import Registry

GATEWAY_TESTS = Path(__file__).resolve().parent.parent / "gateway"
if str(GATEWAY_TESTS) not in sys.path:
    sys.path.insert(0, str(GATEWAY_TESTS))

from .support import KEYS  # noqa: E402


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A real registry with the fixed-key devices of :data:`support.KEYS`."""
    reg = Registry(tmp_path / "registry")
    for dev, key in KEYS.items():
        kind = "streetlight" if dev.startswith("sl") else "bin"
        reg.add(dev, kind=kind, zone="north", lat="52.37", lon="4.89", key=key)
    yield reg
    reg.close()
