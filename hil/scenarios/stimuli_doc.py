"""Shape checks of a board's stimuli document (inline ``[boards.stimuli]`` or a stimuli file) and
of its ``faults`` entries, before the simulator's own parser (:func:`hil.sim.stimuli.load_stimuli`)
reads their values.

The simulator's parser assumes the shapes (``[set]`` a table, ``[[at]]`` an array of tables), so
a wrong shape would crash it; here each one is a :class:`ScenarioError` naming the dotted key and
what is expected. Top-level keys are those the simulator reads; any other is an
:class:`UnknownKeyError`, as ``civicedge sim up --stimuli`` refuses "unknown sections".
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from pathlib import Path
from typing import Any, Iterable

from hil.scenarios.errors import ScenarioError, UnknownKeyError
from hil.sim.stimuli import STIMULI_KEYS  # the simulator owns the stimuli format

FAULT_KEYS: tuple[str, ...] = ("time", "every", "until", "fault")
"""Keys of a ``faults`` entry: a timeline entry with a fault line."""
_SCALARS = (str, int, float, bool, dt.datetime, dt.date, dt.time)
_PIN_NAME = re.compile(r"^(pin|adc):(.*)$")
_AT_FORM = "an array of tables ([[at]] sections, or at = [{ time = \"+1m\", ... }])"


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value!r}"


def _fail(message: str, *, key: str, value: Any, path: str | None, where: str) -> ScenarioError:
    """A ScenarioError at the dotted location ``where`` (``details['where']``, as the scenario loader's)."""
    return ScenarioError(message, key=key, value=repr(value), path=path, where=where)


def unknown_keys_text(unknown: list[str], allowed: Iterable[str]) -> str:
    """``tme (did you mean 'time'?), colour``: unknown keys, each with the closest allowed key if any."""
    choices = sorted(allowed)
    out = []
    for key in unknown:
        close = difflib.get_close_matches(key, choices, n=1)
        out.append(f"{key} (did you mean {close[0]!r}?)" if close else key)
    return ", ".join(out)


def check_keys(table: dict[str, Any], allowed: set[str], where: str, path: str | Path | None,
               error: type[ScenarioError] = UnknownKeyError) -> None:
    """Raise ``error`` (UnknownKeyError by default) naming every key of ``table`` not in ``allowed``
    (``details["key"]``: the first), each with a did-you-mean when an allowed key is close."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise error(f"{where}: unknown key(s) {unknown_keys_text(unknown, allowed)} (allowed: "
                    f"{', '.join(sorted(allowed))})", path=str(path) if path else None, key=unknown[0], where=where)


def _check_name(name: str, where: str, key: str, path: str | None, located: str | None = None) -> None:
    """``located``: ``details['where']`` (a timeline entry's own location); else ``where.name``."""
    m = _PIN_NAME.match(name)
    if m and not m.group(2).isdigit():
        raise _fail(f"{where}.{name}: {m.group(1)}:N needs a GPIO number N, got {name!r}", key=key, value=name,
                    path=path, where=located or f"{where}.{name}")


def _check_value(name: str, value: Any, where: str, key: str, path: str | None, located: str | None = None) -> None:
    """``located``: as for :func:`_check_name`."""
    if name == "fault":
        if isinstance(value, str) or isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return
        raise _fail(f"{where}.fault: must be a fault line or a list of fault lines (strings), got {_kind(value)}",
                    key=key, value=value, path=path, where=located or f"{where}.fault")
    if not isinstance(value, _SCALARS):
        raise _fail(f"{where}.{name}: must be a number, string or boolean, got {_kind(value)}", key=key,
                    value=value, path=path, where=located or f"{where}.{name}")


def check_stimuli_doc(doc: Any, where: str, path: str | None) -> None:
    """Refuse a stimuli document of the wrong shape or with keys the simulator does not read.

    Args:
        doc: the parsed document (an inline table or a stimuli file's contents).
        where: dotted location for messages, e.g. ``boards[1].stimuli``.
        path: the file it came from (scenario or stimuli file), for ``details["path"]``.

    Raises:
        UnknownKeyError: a top-level key other than ``start``, ``set``, ``at``.
        ScenarioError: a wrong shape (``set`` not a table, ``at`` not an array of tables, a
            value that is a table, ...); ``details["key"]`` is the top-level key at fault.
    """
    if not isinstance(doc, dict):
        raise _fail(f"{where}: must be a table (start, [set], [[at]]), got {_kind(doc)}", key="stimuli", value=doc,
                    path=path, where=where)
    unknown = sorted(set(doc) - set(STIMULI_KEYS))
    if unknown:
        raise UnknownKeyError(f"{where}: unknown key(s) {unknown_keys_text(unknown, STIMULI_KEYS)} (a stimuli document has: "
                              f"{', '.join(STIMULI_KEYS)}; the simulator refuses other sections too)",
                              key=unknown[0], where=where, path=path)
    values = doc.get("set", {})
    if not isinstance(values, dict):
        raise _fail(f"{where}.set: must be a table of stimulus = value ([set] or set = {{ light = 4 }}), got "
                    f"{_kind(values)}", key="set", value=values, path=path, where=f"{where}.set")
    for name, value in values.items():
        _check_name(name, f"{where}.set", "set", path)
        _check_value(name, value, f"{where}.set", "set", path)
    entries = doc.get("at", [])
    if not isinstance(entries, list):
        raise _fail(f"{where}.at: must be {_AT_FORM}, got {_kind(entries)}", key="at", value=entries, path=path,
                    where=f"{where}.at")
    for j, entry in enumerate(entries):
        check_timeline_entry(entry, f"{where}.at[{j + 1}]", "at", path)


def check_timeline_entry(entry: Any, where: str, key: str, path: str | None) -> None:
    """Refuse a timeline entry (``[[at]]`` or a ``faults`` entry) that is not a table of scalars.

    Raises:
        ScenarioError: naming ``where`` (e.g. ``boards[1].stimuli.at[2]``).
    """
    if not isinstance(entry, dict):
        raise _fail(f"{where}: must be a table such as {{ time = \"+1m\", pir = \"pulse 2s\" }}, got {_kind(entry)}",
                    key=key, value=entry, path=path, where=where)
    for name, value in entry.items():
        _check_name(name, where, key, path, located=where)  # located at the entry, as the loader's timeline errors
        _check_value(name, value, where, key, path, located=where)


def check_fault_entry(entry: Any, where: str, path: str | None) -> None:
    """Refuse a ``faults`` entry with unknown keys (first, so a typo is named), missing keys or wrong shapes.

    Raises:
        UnknownKeyError: a key other than ``time``, ``every``, ``until``, ``fault``.
        ScenarioError: not a table, ``time`` or ``fault`` missing, a value of the wrong shape.
    """
    if not isinstance(entry, dict):
        raise _fail(f"{where}: must be a table {{ time = \"+5m\", fault = \"reset\" }}, got {_kind(entry)}",
                    key="faults", value=entry, path=path, where=where)
    check_keys(entry, set(FAULT_KEYS), where, path)
    missing = [k for k in ("time", "fault") if k not in entry]
    if missing:
        raise _fail(f"{where}: needs 'time' and 'fault' (missing: {', '.join(missing)})", key=missing[0],
                    value=entry, path=path, where=where)
    check_timeline_entry(entry, where, "faults", path)


__all__ = ["FAULT_KEYS", "STIMULI_KEYS", "check_fault_entry", "check_keys", "check_stimuli_doc", "check_timeline_entry"]
