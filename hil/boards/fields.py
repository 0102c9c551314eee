"""Strict reader for one TOML table: typed getters that raise specific board errors.

Every getter records the key as consumed; :meth:`Table.finish` then rejects any key left over
(usually a typo), so a misspelt field never silently falls back to a default.
"""

from __future__ import annotations

from typing import Any

from hil.boards.errors import FieldTypeError, InvalidValueError, MissingFieldError, UnknownFieldError

_MISSING = object()


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

    def __init__(self, data: dict[str, Any], path: str, source: str) -> None:
        self.data = data
        self.path = path
        self.source = source
        self._seen: set[str] = set()

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
                raise MissingFieldError(source=self.source, field=self.where(key))
            return default
        return self.data[key]

    def string(self, key: str, default: Any = _MISSING, *, choices: tuple[str, ...] = ()) -> str:
        """Read a string, optionally restricted to ``choices``."""
        value = self._get(key, default)
        if not isinstance(value, str):
            raise FieldTypeError(source=self.source, field=self.where(key), expected="a string", actual=type_name(value))
        if choices and value not in choices:
            raise InvalidValueError(
                source=self.source, field=self.where(key), value=value, reason=f"must be one of {', '.join(choices)}"
            )
        return value

    def integer(self, key: str, default: Any = _MISSING, *, low: int | None = None, high: int | None = None) -> int:
        """Read an integer (not a bool, not a float) within ``[low, high]``."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldTypeError(source=self.source, field=self.where(key), expected="an integer", actual=type_name(value))
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if low is not None and high is not None else (
                f">= {low}" if low is not None else f"<= {high}"
            )
            raise InvalidValueError(source=self.source, field=self.where(key), value=value, reason=f"must be {bounds}")
        return value

    def array(self, key: str, default: Any = _MISSING) -> list[Any]:
        """Read an array (elements are checked by the caller)."""
        value = self._get(key, default)
        if not isinstance(value, list):
            raise FieldTypeError(source=self.source, field=self.where(key), expected="an array", actual=type_name(value))
        return value

    def table(self, key: str, *, required: bool = True) -> Table | None:
        """Read a sub-table; ``None`` if absent and not required."""
        value = self._get(key, _MISSING if required else None)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise FieldTypeError(source=self.source, field=self.where(key), expected="a table", actual=type_name(value))
        return Table(value, self.where(key), self.source)

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
                raise UnknownFieldError(
                    source=self.source, field=self.where(key), allowed=sorted(allowed or self._seen)
                )
