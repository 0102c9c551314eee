"""Where the project's shared data lives: firmware sources, board definitions, privacy policy.

The firmware's privacy policy (``firmware/policy.json``) is the single source of truth for
what a device may send; the gateway's policy gate and the transparency page read the same file.

``firmware/`` and ``boards/`` sit at the top of a checkout (and an editable install reads them
there). A built wheel carries copies of both inside this package, as ``gateway/_bundle/``
(setup.py's build step), found through :mod:`importlib.resources`; they are looked for first, so a
stray ``firmware/`` directory beside an installed package is never taken for ours.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

_PKG_DIR = Path(__file__).resolve().parent
_CHECKOUT_ROOT = _PKG_DIR.parent
BUNDLE_DIR = "_bundle"
"""Directory of this package that holds ``firmware/`` and ``boards/`` in a built wheel (setup.py)."""


class ResourcesMissingError(GatewayError):
    """Neither an installed bundle nor a checkout holds ``firmware/`` and ``boards/`` (a broken install).

    Attributes:
        searched: the directories looked in, in order.
    """

    reason = "resources_missing"

    def __init__(self, searched: tuple[Path, ...]) -> None:
        places = " and ".join(str(p) for p in searched)
        super().__init__(f"civicedge's firmware/ and boards/ are in neither {places}: the installation is "
                         "incomplete; reinstall civicedge (a wheel carries them in gateway/_bundle)")
        self.searched = searched


def _bundle_root() -> Path | None:
    """``gateway/_bundle`` of an installed wheel, or None (a checkout, or a package not on a file system)."""
    bundle = resources.files(__package__ or "gateway") / BUNDLE_DIR
    if isinstance(bundle, Path) and (bundle / "firmware" / "policy.json").is_file():
        return bundle
    return None


def project_root() -> Path:
    """Return the directory holding ``firmware/`` and ``boards/``.

    That is the wheel's ``gateway/_bundle`` when installed from a wheel, else the checkout.

    Raises:
        ResourcesMissingError: neither holds them.
    """
    bundle = _bundle_root()
    if bundle is not None:
        return bundle
    if (_CHECKOUT_ROOT / "firmware" / "policy.json").is_file():
        return _CHECKOUT_ROOT
    raise ResourcesMissingError((_PKG_DIR / BUNDLE_DIR, _CHECKOUT_ROOT))


def firmware_dir() -> Path:
    """Return the directory whose contents are copied to a board's flash root."""
    return project_root() / "firmware"


def boards_dir() -> Path:
    """Return the directory of board definitions (``*.toml``)."""
    return project_root() / "boards"


def policy_path() -> Path:
    """Return the path of the privacy policy shared by firmware, gateway and transparency page."""
    return firmware_dir() / "policy.json"


@lru_cache(maxsize=1)
def load_policy() -> dict[str, Any]:
    """Load and return the privacy policy as parsed JSON (cached)."""
    with policy_path().open("rb") as fh:
        data: dict[str, Any] = json.load(fh)
    return data
