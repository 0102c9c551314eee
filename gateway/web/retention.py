"""Retention settings changed through the admin API, persisted next to the gateway's data.

The policy's ``retention_days`` per field is the maximum. The gateway config's ``[retention.<kind>]``
may lower it (the operator's deployed setting), and the admin API may only shorten it further: a
value set through the API never outlives a restart with a stricter config.
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
    """Per-field retention overrides (never longer than the config's or the policy's), persisted as JSON.

    Args:
        policy: the privacy policy (source of the maxima).
        path: JSON file for the admin API's overrides (written atomically, owner-only); None keeps
            them in memory only.
        overrides: the gateway config's ``[retention]`` values: caps on what the API may set.

    Raises:
        BadParameter: a config value outside 1..policy maximum, or an unreadable ``path``.
    """

    def __init__(
        self, policy: Mapping[str, Any], *, path: Path | None = None,
        overrides: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self._maxima = policy_retention(policy)
        self._path = path
        self._lock = threading.Lock()
        self._configured: dict[tuple[str, str], int] = {}
        for (kind, fname), days in (overrides or {}).items():
            self._check(kind, fname, days)
            self._configured[(kind, fname)] = days
        self._overrides: dict[tuple[str, str], int] = {}
        if path is not None and path.is_file():
            self._load(path)

    def _cap(self, key: tuple[str, str]) -> int:
        return self._configured.get(key, self._maxima[key])

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            items = [(str(i["kind"]), str(i["field"]), int(i["days"])) for i in data["overrides"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadParameter(f"retention settings file {path} is unreadable: {exc}", param="retention") from exc
        for kind, fname, days in items:
            self._check(kind, fname, days)
            cap = self._cap((kind, fname))
            if days > cap:  # the config was made stricter since the API set this: the config wins
                logger.warning("%s keeps %s.%s for %d days, longer than the gateway config's %d: using %d",
                               path, kind, fname, days, cap, cap)
                continue
            self._overrides[(kind, fname)] = days

    def _check(self, kind: str, fname: str, days: int) -> None:
        if (kind, fname) not in self._maxima:
            raise BadParameter(f"no field {kind}.{fname} in the privacy policy", param="field")
        if not 1 <= days <= self._maxima[(kind, fname)]:
            raise BadParameter(
                f"retention of {kind}.{fname} must be 1..{self._maxima[(kind, fname)]} days", param="days"
            )

    def effective(self) -> dict[tuple[str, str], int]:
        """Retention in days per (kind, field): the API's value where set, else the config's, else the policy's."""
        with self._lock:
            return {key: self._overrides.get(key, self._cap(key)) for key in self._maxima}

    def as_json(self) -> dict[str, dict[str, int]]:
        """Effective retention as ``kind -> field -> days``."""
        out: dict[str, dict[str, int]] = {}
        for (kind, fname), days in sorted(self.effective().items()):
            out.setdefault(kind, {})[fname] = days
        return out

    def set(self, kind: str, fname: str, days: int) -> None:
        """Set one override and persist it.

        Raises:
            BadParameter: unknown field, or days outside 1..policy maximum or above the gateway
                config's value for the field.
        """
        self._check(kind, fname, days)
        configured = self._configured.get((kind, fname))
        if configured is not None and days > configured:
            raise BadParameter(f"retention of {kind}.{fname} may be at most {configured} days: the gateway "
                               f"config sets [retention.{kind}] {fname} = {configured}", param="days")
        with self._lock:
            self._overrides[(kind, fname)] = days
            if self._path is not None:
                self._save(self._path)
        logger.info("retention of %s.%s set to %s days", kind, fname, days)

    def _save(self, path: Path) -> None:
        doc = {"overrides": [{"kind": k, "field": f, "days": d} for (k, f), d in sorted(self._overrides.items())]}
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when a stale .tmp was left with wider permissions
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
