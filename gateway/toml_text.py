"""The text of a TOML file, read the same way for every file civicedge takes.

Gateway configs, board definitions, scenarios and stimuli files are all edited by hand, some on
Windows: a UTF-8 byte-order mark (Notepad writes one) is skipped, since ``tomllib`` would fail at
line 1, column 1 on it; a UTF-16 file is named as such; the first byte that is not UTF-8 is named
with its line, column and offset (and the Windows-1252 letter it would be). Each caller wraps
:class:`TomlTextError` in its own error type, so the message says which kind of file it was.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from gateway.small_files import (
    CONFIG_MAX,
    FileTooLargeError,
    NestedTooDeeplyError,
    NotRegularFileError,
    loads_toml,
    read_limited,
)

UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")


class TomlTextError(ValueError):
    """A TOML file that cannot be read as UTF-8 text.

    ``str(error)`` is the problem without the file's name (callers add it), ending in what to do.
    ``reason`` is ``directory``, ``unreadable`` (``strerror`` set when the file could not be opened or
    read), ``utf16``, ``not_utf8`` or ``nested`` (nested too deeply to parse).
    """

    def __init__(self, message: str, *, reason: str, strerror: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.strerror = reason, strerror


def decode_toml_bytes(data: bytes, *, what: str = "file") -> str:
    """``data`` as text: UTF-8 with a leading byte-order mark skipped.

    Raises:
        TomlTextError: a UTF-16 byte-order mark, or bytes that are not UTF-8 (the first is named).
    """
    if data.startswith(UTF16_MARKS):
        raise TomlTextError(f"not UTF-8 text (it starts with a UTF-16 byte-order mark); save the {what} as UTF-8",
                            reason="utf16")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise TomlTextError(f"not UTF-8 text ({_where_not_utf8(data, exc.start)}); save the {what} as UTF-8",
                            reason="not_utf8") from None


def utf8_error_position(data: bytes, start: int) -> tuple[int, int]:
    """``(line, column)`` of the byte at ``start``, the first that is not UTF-8 in ``data``; the column in
    characters as tomllib counts them, a byte-order mark at the very start not counted (an editor shows no
    column for it)."""
    line_start = data.rfind(b"\n", 0, start) + 1
    before = data[line_start:start].decode("utf-8")  # valid: the first bad byte is at start
    if line_start == 0:
        before = before.removeprefix("\ufeff")
    return data.count(b"\n", 0, start) + 1, len(before) + 1


def _where_not_utf8(data: bytes, start: int) -> str:
    """Where the first byte that is not UTF-8 is, in characters as tomllib counts them (an editor may count
    a wide character or a tab as more): "line 3, column 14: byte 0xfc at
    offset 20, ü in Windows-1252?" (the guess only when that byte is a letter in Windows-1252, the usual
    cause: a file saved as "ANSI" on Windows)."""
    line, column = utf8_error_position(data, start)
    byte = data[start]
    where = "line %d, column %d: byte 0x%02x at offset %d" % (line, column, byte, start)
    try:
        guess = bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d: not in Windows-1252
        return where
    return where + ", %s in Windows-1252?" % guess if guess.isalpha() else where


def read_toml_text(path: Path, *, what: str = "file") -> str:
    """The text of the TOML file at ``path`` (see :func:`decode_toml_bytes`), for a caller that needs the
    text; one that parses it right away takes :func:`read_toml_doc`, which parses it once.

    Only a regular file (a symlink to one is fine) of at most :data:`gateway.small_files.CONFIG_MAX`
    bytes is read, opened without blocking: a FIFO is refused, not waited on for ever, and ``/dev/zero``
    is not read until memory runs out. A text nested too deeply for ``tomllib`` (its RecursionError
    traceback in the caller's ``tomllib.loads``) is refused here; a text that is not TOML is returned,
    for the caller's own parse to report.

    Raises:
        TomlTextError: a directory; a file that cannot be read (no permission, gone: ``strerror`` set);
            not a regular file or too large (reason ``unreadable``, no ``strerror``: not a permission
            problem); not UTF-8; nested too deeply (reason ``nested``).
    """
    text = _read_text(path, what)
    try:
        _parse(text)  # callers parse with tomllib.loads: the depth is checked here, once, for all of them
    except tomllib.TOMLDecodeError:
        pass  # the caller's parse says what is wrong, in its own words
    return text


def read_toml_doc(path: Path, *, what: str = "file") -> dict[str, Any]:
    """The TOML document in the file at ``path``, read as :func:`read_toml_text` reads it and parsed once.

    Raises:
        TomlTextError: as :func:`read_toml_text` (a directory, unreadable, not UTF-8, nested too deeply).
        tomllib.TOMLDecodeError: the text is not TOML (the caller says so in its own words).
    """
    return _parse(_read_text(path, what))


def _read_text(path: Path, what: str) -> str:
    """The file's text, unparsed (the reading and decoding errors of :func:`read_toml_text`)."""
    try:
        data = read_limited(path, CONFIG_MAX)
    except IsADirectoryError:
        raise TomlTextError(f"is a directory, not a {what}", reason="directory") from None
    except (NotRegularFileError, FileTooLargeError) as exc:
        raise TomlTextError(f"cannot read the {what}: {exc.strerror}", reason="unreadable") from None
    except OSError as exc:
        strerror = exc.strerror or type(exc).__name__
        raise TomlTextError(f"cannot read the {what}: {strerror}", reason="unreadable", strerror=strerror) from None
    return decode_toml_bytes(data, what=what)


def _parse(text: str) -> dict[str, Any]:
    """``text`` parsed (:func:`gateway.small_files.loads_toml`); too deep a nesting a TomlTextError ``nested``.

    Raises:
        tomllib.TOMLDecodeError: not TOML.
    """
    try:
        return loads_toml(text)
    except NestedTooDeeplyError as exc:
        raise TomlTextError(f"not valid TOML: {exc}", reason="nested") from None
