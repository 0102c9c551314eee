"""Fixtures of the gateway suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.registry import Registry

sys.path.insert(0, str(Path(__file__).resolve().parent))

KEYS = {"bin-1": bytes(range(32)), "bin-2": bytes(range(1, 33)), "sl-1": bytes(range(2, 34))}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """A real registry with bin-1, bin-2 (bins) and sl-1 (streetlight), fixed keys."""
    reg = Registry(tmp_path / "registry")
    for dev, key in KEYS.items():
        kind = "streetlight" if dev.startswith("sl") else "bin"
        reg.add(dev, kind=kind, zone="north" if dev != "bin-2" else "south", lat="52.37", lon="4.89", key=key)
    return reg
