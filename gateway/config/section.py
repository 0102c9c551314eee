"""Typed access to one table of gateway.toml, and the value checks more than one section shares.

:class:`Section` reports an unknown key (with a close match), a value of the wrong type and a number
out of range with the dotted key, as every section of the config needs (:mod:`gateway.config.loader`).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from gateway.config.home import expand_user
from gateway.errors import ConfigError

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table",
               list: "an array"}


class Section:
    """Typed access to one TOML table that reports unknown keys and type errors precisely."""

    def __init__(self, data: Any, name: str, source: Path | None, allowed: tuple[str, ...]) -> None:
        self.name, self.source = name, source
        if not isinstance(data, dict):
            raise self.error(name, "[%s] must be a table" % name, "wrong_type")
        for key in data:
            if key not in allowed:
                near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = "did you mean %r? " % near[0] if near else ""
                raise self.error("%s.%s" % (name, key), "unknown key %r in [%s] (%sallowed: %s)"
                                 % (key, name, hint, ", ".join(allowed)), "unknown_key")
        self.data: dict[str, Any] = data

    def error(self, key: str, message: str, reason: str) -> ConfigError:
        """The ConfigError for ``key`` (dotted), its message prefixed with the config file's name."""
        where = "%s: " % self.source if self.source else ""
        return ConfigError(where + message, reason=reason, key=key, path=self.source)

    def get(self, key: str, typ: type, default: Any = None, *, required: bool = False) -> Any:
        """The value at ``key`` if it is of type ``typ`` (an integer taken for a float, a bool never for a
        number), ``default`` when absent; a ConfigError ``missing`` (with ``required``) or ``wrong_type``."""
        dotted = "%s.%s" % (self.name, key)
        if key not in self.data:
            if required:
                raise self.error(dotted, "missing required key %r in [%s]" % (key, self.name), "missing")
            return default
        value = self.data[key]
        ok = isinstance(value, typ) and not (typ in (int, float) and isinstance(value, bool))
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            raise self.error(dotted, "%s must be %s, not %r" % (dotted, _TYPE_NAMES.get(typ, typ.__name__), value),
                             "wrong_type")
        return value

    def number(self, key: str, typ: type, default: Any, lo: float, hi: float) -> Any:
        """:meth:`get`, refused (``bad_value``) outside ``lo..hi``."""
        value = self.get(key, typ, default)
        if not lo <= value <= hi:
            raise self.error("%s.%s" % (self.name, key), "%s.%s = %r is outside %s..%s" % (self.name, key, value, lo, hi),
                             "bad_value")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        """The string at ``key`` (``default`` when absent), refused (``bad_value``) unless one of ``choices``."""
        value: str = self.get(key, str, default)
        if value not in choices:
            raise self.error("%s.%s" % (self.name, key), "%s.%s = %r must be one of %s"
                             % (self.name, key, value, ", ".join(choices)), "bad_value")
        return value

    def path(self, key: str, default: Path, base: Path, *, file: bool = False) -> Path:
        """The path at ``key`` relative to ``base`` (``default`` when absent); ``file`` for a key that names
        a file, not a directory (the hint for an empty value differs)."""
        value = self.get(key, str, None)
        if value is None:
            return default
        if not value.strip():  # Path("") is ".": an empty data_dir put the store next to the config
            # "." only fits a directory: for a file key it is refused as "not a regular file".
            example = ", such as %r" % default.name if default != base else ""
            other = ("name a file, relative to the config file's directory%s" % example if file
                     else "write \".\" for the config file's own directory")
            raise self.error("%s.%s" % (self.name, key), "%s.%s must not be empty (leave the key out for the default,"
                             " or %s)" % (self.name, key, other), "bad_value")
        return base / self.user_path(key, value)

    def user_path(self, key: str, value: str) -> Path:
        """``value`` of ``key`` as a path, a leading ``~`` expanded (gateway.config.home); a ConfigError
        ``bad_path`` when that home directory is not known (was a RuntimeError traceback)."""
        path = expand_user(value)
        if path is None:
            if value == "~" or value.startswith("~/"):
                why = "this user has no home directory (HOME is not set or empty and uid %d has no passwd entry)" \
                    % os.getuid()
            else:
                why = "there is no such user"
            raise self.error("%s.%s" % (self.name, key), "%s.%s = %r starts with ~ but %s: write the path out"
                             % (self.name, key, value, why), "bad_path")
        return path


def is_host(text: str) -> bool:
    """True for an IP address or a well-formed DNS host name (not resolved: see
    :func:`gateway.config.http_section.check_listen`)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    # All-numeric labels would be an IPv4 address, and this one did not parse as one (999.1.1.1).
    return (0 < len(name) <= 253 and all(_HOST_LABEL.match(label) for label in labels)
            and not all(label.isdigit() for label in labels))
