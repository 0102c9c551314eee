"""The privacy policy file as published: its exact bytes (``GET /policy.json``) and their SHA-256.

A citizen checks the gateway against a release by hashing: ``curl .../policy.json | sha256sum`` gives
the ``policy_sha256`` that ``/transparency`` shows, and the same as ``sha256sum firmware/policy.json``
of the release. So what is served and hashed is the file's bytes, never a re-serialisation of the
parsed policy (which would hash to something no release contains).

The gateway parses the policy once, at start (:func:`gateway.resources.load_policy`). The file is
read again here and served only if it still parses to exactly the policy the gateway runs with: a file
replaced on disk since the start (an upgrade without a restart) is not what the gateway applies, and is
not served under its name (:func:`policy_file` returns None).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gateway.resources import policy_path


@dataclass(frozen=True)
class PolicyFile:
    """The bytes of the policy file and their SHA-256 (lower-case hex, as ``sha256sum`` prints it)."""

    body: bytes
    sha256: str


# (path, inode, size, mtime_ns) -> (bytes, parsed): the file is re-read only when it changes.
_cache: dict[tuple[str, int, int, int], tuple[bytes, Any]] = {}
_lock = threading.Lock()


def _read(path: Path) -> tuple[bytes, Any] | None:
    """The file's bytes and their parse, or None when it cannot be read or is not JSON."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    try:
        body = path.read_bytes()
        parsed = json.loads(body)
    except (OSError, ValueError):
        return None
    with _lock:
        _cache.clear()  # one file: keep only its current version
        _cache[key] = (body, parsed)
    return body, parsed


def policy_file(policy: Mapping[str, Any], path: Path | None = None) -> PolicyFile | None:
    """The policy file whose contents are ``policy``, the policy the gateway runs with.

    Args:
        policy: the parsed policy in force (``WebContext.policy``).
        path: the file (default: :func:`gateway.resources.policy_path`, what the gateway loaded).

    Returns:
        Its bytes and SHA-256; None when the file cannot be read, or no longer parses to ``policy``
        (changed on disk since the gateway loaded it, or the gateway was given another policy).
    """
    read = _read(path or policy_path())
    if read is None or read[1] != policy:
        return None
    body, _ = read
    return PolicyFile(body=body, sha256=hashlib.sha256(body).hexdigest())
