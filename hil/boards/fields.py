"""Strict reader for one TOML table: typed getters that raise specific board errors.

Every getter records the key as consumed; :meth:`Table.finish` then rejects any key left over
(usually a typo), so a misspelt field never silently falls back to a default.

With a :class:`Problems` collector, a mistake the reader can step over (a value out of range, a
wrong type or choice where there is a default, an unknown key) is recorded and reading goes on, so
one run reports every problem of a file; one it cannot step over (a required field missing or
unusable) is raised, and the caller's :class:`Section` records it and skips the rest of that part.
"""

from __future__ import annotations

import difflib
from types import TracebackType
from typing import Any, Iterable, cast

from hil.boards.errors import BoardError, FieldTypeError, InvalidValueError, MissingFieldError, UnknownFieldError

_MISSING = object()


class Problems:
    """The errors found so far in one board file, in the order they were found."""

    def __init__(self) -> None:
        self.errors: list[BoardError] = []

    def add(self, error: BoardError) -> None:
        """Record ``error`` and go on."""
        self.errors.append(error)

    def raise_if_any(self) -> None:
        """Raise the first error, carrying all of them in its ``problems``."""
        if self.errors:
            first = self.errors[0]
            first.problems = list(self.errors)
            raise first


class Section:
    """``with Section(problems) as part:`` records a :class:`BoardError` raised inside (``part.failed``)
    and carries on after the block: one broken table does not hide the problems of the others."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.failed = False

    def __enter__(self) -> Section:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if isinstance(exc, BoardError):
            self.problems.add(exc)
            self.failed = True
            return True
        return False


def type_name(value: Any) -> str:
    """TOML-ish name of a parsed value's type, for error messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


class Table:
    """A TOML table being read, with its dotted path for errors.

    Args:
        data: the parsed table.
        path: dotted path of this table ("" for the document root).
        source: board name or file, for errors.
    """

    def __init__(self, data: dict[str, Any], path: str, source: str, problems: Problems | None = None) -> None:
        self.data = data
        self.path = path
        self.source = source
        self.problems = problems
        self._seen: set[str] = set()
        self._expected: frozenset[str] | None = None

    def expect(self, keys: Iterable[str]) -> Table:
        """Declare every key the schema accepts in this table; returns the table.

        A missing required key then names a key present that the schema does not know and that
        looks like its misspelling (``tolerence_pct`` for ``tolerance_pct``): reading stops at the
        missing key, before :meth:`finish` would report the unknown one. Without it (the schema's keys
        unknown) no key is suggested: a valid key is never called a misspelling of another.
        """
        self._expected = frozenset(keys)
        return self

    def misspelt(self, key: str) -> str | None:
        """Dotted path of the unknown key (see :meth:`expect`) most like ``key``, or None."""
        if self._expected is None:
            return None
        unknown = [k for k in self.data if k not in self._expected]
        close = difflib.get_close_matches(key, unknown, n=1)
        return self.where(close[0]) if close else None

    def soft(self, error: BoardError, fallback: Any = _MISSING) -> Any:
        """Record ``error`` and return ``fallback`` when collecting and there is one; else raise it."""
        if self.problems is None or fallback is _MISSING:
            raise error
        self.problems.add(error)
        return fallback

    def skip(self, *keys: str) -> None:
        """Count ``keys`` as read: parts not checked because what they depend on is wrong."""
        self._seen.update(keys)

    def where(self, key: str) -> str:
        """Dotted path of ``key`` inside this table."""
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        """Whether ``key`` is present."""
        return key in self.data

    def _get(self, key: str, default: Any) -> Any:
        self._seen.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise MissingFieldError(source=self.source, field=self.where(key), found=self.misspelt(key))
            return default
        return self.data[key]

    def string(self, key: str, default: Any = _MISSING, *, choices: tuple[str, ...] = ()) -> str:
        """Read a string, optionally restricted to ``choices``."""
        value = self._get(key, default)
        if not isinstance(value, str):
            return cast(str, self.soft(FieldTypeError(source=self.source, field=self.where(key), expected="a string",
                                                      actual=type_name(value)), default))
        if choices and value not in choices:
            return cast(str, self.soft(InvalidValueError(
                source=self.source, field=self.where(key), value=value, reason=f"must be one of {', '.join(choices)}"
            ), default))
        return value

    def integer(self, key: str, default: Any = _MISSING, *, low: int | None = None, high: int | None = None) -> int:
        """Read an integer (not a bool, not a float) within ``[low, high]``."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            return cast(int, self.soft(FieldTypeError(source=self.source, field=self.where(key), expected="an integer",
                                                      actual=type_name(value)), default))
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and low == high:
                bounds = str(low)
            elif low is not None and high is not None:
                bounds = f"between {low} and {high}"
            else:
                bounds = f">= {low}" if low is not None else f"<= {high}"
            # The value has the right type: the checks after it can still use it.
            return cast(int, self.soft(InvalidValueError(source=self.source, field=self.where(key), value=value,
                                                         reason=f"must be {bounds}"), value))
        return value

    def array(self, key: str, default: Any = _MISSING) -> list[Any]:
        """Read an array (elements are checked by the caller)."""
        value = self._get(key, default)
        if not isinstance(value, list):
            return cast(list[Any], self.soft(FieldTypeError(source=self.source, field=self.where(key),
                                                            expected="an array", actual=type_name(value)), default))
        return value

    def table(self, key: str, *, required: bool = True) -> Table | None:
        """Read a sub-table; ``None`` if absent and not required."""
        value = self._get(key, _MISSING if required else None)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise FieldTypeError(source=self.source, field=self.where(key), expected="a table", actual=type_name(value))
        return Table(value, self.where(key), self.source, self.problems)

    def keys(self) -> list[str]:
        """Keys present in the table, in file order."""
        return list(self.data)

    def finish(self, allowed: list[str] | None = None) -> None:
        """Raise :class:`UnknownFieldError` for a key no getter asked for.

        Args:
            allowed: names to list in the error (defaults to the keys that were read).
        """
        for key in self.data:
            if key not in self._seen:
                error = UnknownFieldError(source=self.source, field=self.where(key), allowed=sorted(allowed or self._seen))
                if self.problems is None:
                    raise error
                self.problems.add(error)
