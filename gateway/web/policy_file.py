"""The privacy policy file as published: its exact bytes (``GET /policy.json``) and their SHA-256.

A citizen checks the gateway against a release by hashing: ``curl .../policy.json | sha256sum`` gives
the ``policy_sha256`` that ``/transparency`` shows, and the same as ``sha256sum firmware/policy.json``
of the release. So what is served and hashed is the file's bytes, never a re-serialisation of the
parsed policy (which would hash to something no release contains).

The bytes are those :func:`gateway.resources.load_policy` read when the gateway started, kept in
memory (:func:`gateway.resources.loaded_policy_source`), never the file as it is on disk now: a file
re-formatted, or with ``1`` written ``1.0``, since the start parses to the same policy but hashes to
another value, and a file replaced since (an upgrade without a restart) is not what the gateway applies.
Either way the gateway goes on serving what it applies, so the hash names the release whose policy it
runs; the difference on disk is logged for the operator (a restart applies and serves the new file).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gateway.resources import loaded_policy_source

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolicyFile:
    """The bytes of the policy file and their SHA-256 (lower-case hex, as ``sha256sum`` prints it)."""

    body: bytes
    sha256: str


# (path, inode, size, mtime_ns) of the file last compared with the loaded bytes: the file on disk is
# read again only when it changes, and a difference is logged once per change.
_seen: tuple[str, int, int, int] | None = None
_lock = threading.Lock()


def _warn_if_changed_on_disk(path: Path, loaded: bytes) -> None:
    """Log a warning when the file at ``path`` no longer holds the bytes the gateway loaded."""
    global _seen
    try:
        st = os.stat(path)
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        key = (str(path), -1, -1, -1)
    with _lock:
        if key == _seen:
            return
        _seen = key
    try:
        same = path.read_bytes() == loaded
        reason = "differs from the bytes the gateway loaded at start"
    except OSError as exc:
        same, reason = False, "cannot be read (%s)" % exc.strerror
    if not same:
        logger.warning("the privacy policy file %s %s; /policy.json and policy_sha256 go on naming the policy "
                       "the gateway applies, the one it loaded; a restart applies and serves the file", path, reason)


def policy_file(policy: Mapping[str, Any]) -> PolicyFile | None:
    """The policy file whose contents are ``policy``, the policy the gateway runs with.

    Args:
        policy: the parsed policy in force (``WebContext.policy``).

    Returns:
        The bytes :func:`gateway.resources.load_policy` read and their SHA-256 (the file it read is
        compared with them, to warn the operator of a change); None when no policy was loaded or the
        gateway was given another policy than the one loaded.
    """
    source = loaded_policy_source()
    if source is None or source.parsed != policy:
        return None
    _warn_if_changed_on_disk(source.path, source.body)
    return PolicyFile(body=source.body, sha256=source.sha256)
