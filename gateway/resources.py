"""Where the project's shared data lives: firmware sources, board definitions, privacy policy.

The firmware's privacy policy (``firmware/policy.json``) is the single source of truth for
what a device may send; the gateway's policy gate and the transparency page read the same file.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

_PKG_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PKG_DIR.parent


def project_root() -> Path:
    """Return the checkout (or install prefix) holding ``firmware/`` and ``boards/``."""
    return _REPO_ROOT


def firmware_dir() -> Path:
    """Return the directory whose contents are copied to a board's flash root."""
    return _REPO_ROOT / "firmware"


def boards_dir() -> Path:
    """Return the directory of board definitions (``*.toml``)."""
    return _REPO_ROOT / "boards"


def policy_path() -> Path:
    """Return the path of the privacy policy shared by firmware, gateway and transparency page."""
    return firmware_dir() / "policy.json"


@lru_cache(maxsize=1)
def load_policy() -> dict[str, Any]:
    """Load and return the privacy policy as parsed JSON (cached)."""
    with policy_path().open("rb") as fh:
        data: dict[str, Any] = json.load(fh)
    return data
