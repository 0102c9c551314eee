"""Where the project's shared data lives: firmware sources, board definitions, privacy policy, and
what an installed package's user reads: the docs, the changelog, the systemd unit, the alert rules.

The firmware's privacy policy (``firmware/policy.json``) is the single source of truth for
what a device may send; the gateway's policy gate and the transparency page read the same file.

``firmware/`` and ``boards/`` sit at the top of a checkout (and an editable install reads them
there). A built wheel carries copies of both inside this package, as ``gateway/_bundle/``
(setup.py's build step). In a civicedge checkout (the directory above this package holds
civicedge's ``pyproject.toml``) the checkout's own trees are used, so a stale ``_bundle`` left in
the source tree is never read in their place; anywhere else the bundle is looked for first, so a
stray ``firmware/`` directory beside an installed package is never taken for ours.
"""

from __future__ import annotations

import hashlib
import json
import threading
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, GatewayError
from gateway.policy_check import check_policy

_PKG_DIR = Path(__file__).resolve().parent
_CHECKOUT_ROOT = _PKG_DIR.parent
BUNDLE_DIR = "_bundle"
"""Directory of this package that holds ``firmware/`` and ``boards/`` in a built wheel (setup.py)."""
DISTRIBUTION = "civicedge"  # pyproject.toml's [project] name, which marks a checkout


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


def _is_checkout(root: Path) -> bool:
    """``root`` holds civicedge's ``pyproject.toml`` and ``firmware/policy.json``: a civicedge checkout."""
    if not (root / "firmware" / "policy.json").is_file():
        return False
    try:
        with (root / "pyproject.toml").open("rb") as fh:
            project = tomllib.load(fh).get("project")
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return isinstance(project, dict) and project.get("name") == DISTRIBUTION


def locate(pkg_dir: Path) -> Path:
    """Return the directory holding ``firmware/`` and ``boards/`` for the ``gateway`` package in ``pkg_dir``.

    The checkout above ``pkg_dir`` when it is civicedge's; else ``pkg_dir/_bundle`` (an installed
    wheel); else a checkout-like directory above ``pkg_dir`` holding ``firmware/policy.json``.

    Raises:
        ResourcesMissingError: none holds them.
    """
    checkout = pkg_dir.parent
    if _is_checkout(checkout):
        return checkout
    bundle = pkg_dir / BUNDLE_DIR
    if (bundle / "firmware" / "policy.json").is_file():
        return bundle
    if (checkout / "firmware" / "policy.json").is_file():
        return checkout
    raise ResourcesMissingError((bundle, checkout))


@lru_cache(maxsize=1)
def project_root() -> Path:
    """Return the directory holding ``firmware/`` and ``boards/`` (cached: :func:`locate` of this package).

    That is the checkout in a civicedge checkout (an editable install too), the wheel's
    ``gateway/_bundle`` when installed from a wheel.

    Raises:
        ResourcesMissingError: neither holds them.
    """
    return locate(_PKG_DIR)


def firmware_dir() -> Path:
    """Return the directory whose contents are copied to a board's flash root."""
    return project_root() / "firmware"


def boards_dir() -> Path:
    """Return the directory of board definitions (``*.toml``)."""
    return project_root() / "boards"


def docs_dir() -> Path:
    """Return the directory of the documentation pages (``docs/*.md``) and their data files (``docs/*.json``:
    the protocol's test vectors); a wheel ships only those."""
    return project_root() / "docs"


def changelog_path() -> Path:
    """Return the path of ``CHANGELOG.md`` (docs/upgrading.md: read a release's entry before upgrading)."""
    return project_root() / "CHANGELOG.md"


def service_unit_path() -> Path:
    """Return the path of the gateway's systemd unit, ``scripts/civicedge-gateway.service``."""
    return project_root() / "scripts" / "civicedge-gateway.service"


def alert_rules_path() -> Path:
    """Return the path of the Prometheus alert rules, ``scripts/prometheus/civicedge-alerts.yml``."""
    return project_root() / "scripts" / "prometheus" / "civicedge-alerts.yml"


def policy_path() -> Path:
    """Return the path of the privacy policy shared by firmware, gateway and transparency page."""
    return firmware_dir() / "policy.json"


@lru_cache(maxsize=1)
def load_policy() -> dict[str, Any]:
    """Load and return the privacy policy as parsed JSON (cached), its shape and values checked.

    :func:`gateway.policy_check.check_policy` (the release rules of
    :func:`gateway.policy_rules.check_release_rules` among them): everything that reads the policy (the
    gate, the transparency page, the config's retention, the board loader) reads it from here, so
    ``run``, ``run --check`` and a board load refuse such a policy at once, and alike. A refusal is
    not cached: the next call reads the file again.

    Raises:
        ConfigError: the file cannot be read (``bad_path``), is not JSON (``syntax``, with its line and
            column), or its content is refused (``bad_value``, ``key`` the value's dotted path); ``path``
            is the file.
    """
    path = policy_path()
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise ConfigError("cannot read the privacy policy %s: %s" % (path, exc.strerror or exc), reason="bad_path",
                          key="", path=path) from None
    try:
        data: dict[str, Any] = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ConfigError("the privacy policy %s is not valid JSON: %s at line %d, column %d"
                          % (path, exc.msg, exc.lineno, exc.colno), reason="syntax", key="", path=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError("the privacy policy %s is not UTF-8 text: byte %d cannot be decoded" % (path, exc.start),
                          reason="syntax", key="", path=path) from None
    except RecursionError:
        raise ConfigError("the privacy policy %s nests lists or objects too deeply to be read" % path,
                          reason="syntax", key="", path=path) from None
    check_policy(data, source=path)
    global _loaded_source
    with _source_lock:
        # parsed again: a caller changing the returned dict must not change what the bytes say
        _loaded_source = PolicySource(path=path, body=body, sha256=hashlib.sha256(body).hexdigest(), parsed=json.loads(body))
    return data


@dataclass(frozen=True)
class PolicySource:
    """The file :func:`load_policy` read, the exact bytes it read (what the gateway runs with), their
    SHA-256 (lower-case hex, as ``sha256sum`` prints it) and their parse."""

    path: Path
    body: bytes
    sha256: str
    parsed: Any


_loaded_source: PolicySource | None = None
_source_lock = threading.Lock()


def loaded_policy_source() -> PolicySource | None:
    """The bytes of the policy file as :func:`load_policy` last read them, or None before any load.

    What is published as the policy in force (``GET /policy.json``, ``policy_sha256``) is these bytes,
    not the file as it is on disk now: a file re-formatted or replaced since still parses, maybe equal,
    but is not what was loaded.
    """
    with _source_lock:
        return _loaded_source


def policy_kinds() -> list[str]:
    """The device kinds of the privacy policy, sorted (what the registry and ``provision`` accept)."""
    return sorted(load_policy()["kinds"])
