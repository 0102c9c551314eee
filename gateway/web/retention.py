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

from gateway.config.retention_warning import retention_interval_warning
from gateway.small_files import STATE_MAX, NestedTooDeeplyError, loads_json, read_limited
from gateway.toml_text import TomlTextError, decode_toml_bytes
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


RETENTION_FILE_FORM = '{"overrides": [{"kind": ..., "field": ..., "days": N}, ...]}'


class RetentionFileError(ValueError):
    """What is wrong with a ``retention.json``, in words that name the entry, key and value
    (completes "retention settings file PATH ...")."""


def _whole_days(value: object) -> int | None:
    """``value`` as a whole number of days, or None when it is not one.

    Accepted (what hand-edited files that loaded before hold): a JSON integer (``5``), a float with
    nothing after the point (``5.0``) and a string of ASCII digits (``"5"``, spaces around allowed).
    Refused: ``true``/``false`` (``int(true)`` was 1 day), ``5.5`` (was cut to 5), other strings.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 9:
            return int(text)
    return None


def parse_retention_file(text: str | bytes, maxima: Mapping[tuple[str, str], int]) -> list[tuple[str, str, int]]:
    """The ``(kind, field, days)`` entries of a ``retention.json`` (:data:`RETENTION_FILE_FORM`).

    The file may have been edited by hand on Windows: a UTF-8 byte-order mark is skipped, and ``text``
    given as the file's bytes that is not UTF-8 is named as for a config file (:mod:`gateway.toml_text`).

    The one reading of the file: the gateway at start (:class:`RetentionSettings`) and
    ``gateway run --check`` both use it, so a file the check passes is one start-up loads. Days are
    whole numbers (see :func:`_whole_days`) in 1..the policy's retention (``maxima``); the
    gateway config's lower caps are applied after, by the caller.

    Raises:
        RetentionFileError: the text is not UTF-8 or not JSON of that form, an entry lacks a key, names a field
            the policy does not have or holds days that are not a whole number in range.
    """
    if isinstance(text, bytes):
        try:
            text = decode_toml_bytes(text)
        except TomlTextError as exc:
            raise RetentionFileError(f"is {exc}") from None
    try:
        doc = loads_json(text.removeprefix("\ufeff"))  # a byte-order mark: Notepad saves one
    except NestedTooDeeplyError as exc:
        raise RetentionFileError("is not of the form %s: it is %s" % (RETENTION_FILE_FORM, exc)) from None
    except json.JSONDecodeError as exc:
        raise RetentionFileError("is not valid JSON (line %d, column %d): %s" % (exc.lineno, exc.colno, exc.msg)) \
            from None
    except ValueError as exc:  # a number too long to convert
        raise RetentionFileError("is not valid JSON: %s" % exc) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("overrides"), list):
        raise RetentionFileError("is not of the form %s" % RETENTION_FILE_FORM)
    entries: list[tuple[str, str, int]] = []
    for n, item in enumerate(doc["overrides"], 1):
        if not isinstance(item, dict):
            raise RetentionFileError("entry %d is not an object with kind, field and days" % n)
        for key in ("kind", "field", "days"):
            if key not in item:
                raise RetentionFileError("entry %d has no %r" % (n, key))
        kind, fname = item["kind"], item["field"]
        if not isinstance(kind, str) or not isinstance(fname, str):
            raise RetentionFileError("entry %d: kind and field must be strings" % n)
        days = _whole_days(item["days"])
        if days is None:
            raise RetentionFileError("entry %d (%s.%s): days is %s, not a whole number of days"
                                     % (n, kind, fname, _shown(item["days"])))
        if (kind, fname) not in maxima:
            raise RetentionFileError("entry %d: no field %s.%s in the privacy policy" % (n, kind, fname))
        if not 1 <= days <= maxima[(kind, fname)]:
            raise RetentionFileError("entry %d: days = %d for %s.%s is outside 1..%d (the policy's retention)"
                                     % (n, days, kind, fname, maxima[(kind, fname)]))
        entries.append((kind, fname, days))
    return entries


def read_retention_bytes(path: Path) -> bytes:
    """The bytes of the retention settings file ``path`` for :func:`parse_retention_file`: a regular file
    of at most :data:`gateway.small_files.STATE_MAX` bytes (a FIFO is refused, not waited on).

    Raises:
        OSError: cannot be read, not a regular file, or larger than that (``strerror`` says which).
    """
    return read_limited(path, STATE_MAX)


def _shown(value: object, limit: int = 40) -> str:
    """``value`` as JSON for a message, cut to ``limit`` characters."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


class RetentionSettings:
    """Per-field retention overrides (never longer than the config's or the policy's), persisted as JSON.

    Args:
        policy: the privacy policy (source of the maxima).
        path: JSON file for the admin API's overrides (written atomically, owner-only); None keeps
            them in memory only.
        overrides: the gateway config's ``[retention]`` values: caps on what the API may set.
        interval_s: the config's ``[retention] interval_s``: a value set shorter than it is warned about
            (its data outlives it by up to the interval); None: not checked.
        log_ignored: log a WARNING for each value of ``path`` longer than the config allows (the config wins);
            False for a caller that reports :attr:`ignored` itself (``run --check``), so it is not said twice.

    Attributes:
        ignored: what ``path`` kept longer than the config allows, one sentence each (the config's value is used).

    Raises:
        BadParameter: a config value outside 1..policy maximum, or an unreadable ``path``.
    """

    def __init__(
        self, policy: Mapping[str, Any], *, path: Path | None = None,
        overrides: Mapping[tuple[str, str], int] | None = None, interval_s: float | None = None,
        log_ignored: bool = True,
    ) -> None:
        self._maxima = policy_retention(policy)
        self._interval_s = interval_s
        self._path = path
        self._lock = threading.Lock()
        self._configured: dict[tuple[str, str], int] = {}
        for (kind, fname), days in (overrides or {}).items():
            self._check(kind, fname, days)
            self._configured[(kind, fname)] = days
        self._overrides: dict[tuple[str, str], int] = {}
        self.ignored: list[str] = []
        if path is not None and path.is_file():
            self._load(path)
        if log_ignored:
            for note in self.ignored:
                logger.warning("%s", note)

    def _cap(self, key: tuple[str, str]) -> int:
        return self._configured.get(key, self._maxima[key])

    def _load(self, path: Path) -> None:
        try:
            items = parse_retention_file(read_retention_bytes(path), self._maxima)  # only read, never rewritten here
        except OSError as exc:
            raise BadParameter(f"retention settings file {path} cannot be read ({exc.strerror or exc})",
                               param="retention") from exc
        except RetentionFileError as exc:
            raise BadParameter(f"retention settings file {path} {exc}; fix it or remove it (the admin API writes "
                               "it: PUT /api/admin/retention)", param="retention") from exc
        for kind, fname, days in items:
            cap = self._cap((kind, fname))
            if days > cap:  # the config was made stricter since the API set this: the config wins
                self.ignored.append("%s keeps %s.%s for %d days, longer than the gateway config's %d: using %d"
                                    % (path, kind, fname, days, cap, cap))
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

    def set(self, kind: str, fname: str, days: int) -> str | None:
        """Set one override and persist it.

        Returns:
            The warning when ``days`` is shorter than ``[retention] interval_s`` allows (its values outlive it by
            up to the interval; also logged), for the admin API's answer; else None.

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
        short = None if self._interval_s is None else retention_interval_warning({(kind, fname): days},
                                                                                  self._interval_s)
        if short is not None:
            logger.warning("%s", short)
        return short

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
