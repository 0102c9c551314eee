"""Retention settings changed through the admin API, persisted next to the gateway's data.

The policy's ``retention_days`` per field is the maximum; the admin API may only shorten it.
The gateway's retention task reads :meth:`RetentionSettings.effective`, which has the
``(kind, field) -> days`` shape ``gateway.storage.ReportStore.apply_retention`` takes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Mapping

from gateway.web.errors import BadParameter

logger = logging.getLogger(__name__)


def policy_retention(policy: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    """The policy's retention per (kind, field) in days."""
    return {
        (kind, name): int(spec["retention_days"])
        for kind, kspec in policy.get("kinds", {}).items()
        for name, spec in kspec.get("fields", {}).items()
        if "retention_days" in spec
    }


class RetentionSettings:
    """Per-field retention overrides (shorter than the policy), persisted as JSON.

    Args:
        policy: the privacy policy (source of the maxima).
        path: JSON file for the overrides (written atomically); None keeps them in memory only.
        overrides: initial overrides, e.g. from the gateway config's ``[retention]`` section.
    """

    def __init__(
        self, policy: Mapping[str, Any], *, path: Path | None = None,
        overrides: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self._maxima = policy_retention(policy)
        self._path = path
        self._lock = threading.Lock()
        self._overrides: dict[tuple[str, str], int] = {}
        for (kind, fname), days in (overrides or {}).items():
            self._check(kind, fname, days)
            self._overrides[(kind, fname)] = days
        if path is not None and path.is_file():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            items = [(str(i["kind"]), str(i["field"]), int(i["days"])) for i in data["overrides"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadParameter(f"retention settings file {path} is unreadable: {exc}", param="retention") from exc
        for kind, fname, days in items:
            self._check(kind, fname, days)
            self._overrides[(kind, fname)] = days

    def _check(self, kind: str, fname: str, days: int) -> None:
        if (kind, fname) not in self._maxima:
            raise BadParameter(f"no field {kind}.{fname} in the privacy policy", param="field")
        if not 1 <= days <= self._maxima[(kind, fname)]:
            raise BadParameter(
                f"retention of {kind}.{fname} must be 1..{self._maxima[(kind, fname)]} days", param="days"
            )

    def effective(self) -> dict[tuple[str, str], int]:
        """Retention in days per (kind, field): the override where set, else the policy's value."""
        with self._lock:
            return {key: self._overrides.get(key, days) for key, days in self._maxima.items()}

    def as_json(self) -> dict[str, dict[str, int]]:
        """Effective retention as ``kind -> field -> days``."""
        out: dict[str, dict[str, int]] = {}
        for (kind, fname), days in sorted(self.effective().items()):
            out.setdefault(kind, {})[fname] = days
        return out

    def set(self, kind: str, fname: str, days: int) -> None:
        """Set one override and persist it.

        Raises:
            BadParameter: unknown field or days outside 1..policy maximum.
        """
        self._check(kind, fname, days)
        with self._lock:
            self._overrides[(kind, fname)] = days
            if self._path is not None:
                self._save(self._path)
        logger.info("retention of %s.%s set to %s days", kind, fname, days)

    def _save(self, path: Path) -> None:
        doc = {"overrides": [{"kind": k, "field": f, "days": d} for (k, f), d in sorted(self._overrides.items())]}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, path)
