"""Terminal text that survives a terminal which cannot show it.

On a non-UTF-8 locale (``de_DE.ISO-8859-1``, ``PYTHONIOENCODING=ascii``) the standard streams cannot
encode every character. :func:`safe_streams` makes such a stream escape what it cannot encode instead
of raising ``UnicodeEncodeError`` mid-command, and :func:`plain` swaps the few symbols the CLI itself
prints (—, …, ✓, ✗) for ASCII ones there, so the output stays readable rather than escaped.
"""

from __future__ import annotations

import codecs
import io
import sys
from typing import Protocol

# The CLI's own non-ASCII symbols and what a stream that cannot encode them shows instead.
ASCII_FALLBACKS: dict[str, str] = {"—": "-", "…": "...", "✓": "ok", "✗": "x"}


class _HasEncoding(Protocol):
    """A text stream or a rich Console: both say which encoding their output is in."""

    @property
    def encoding(self) -> str | None: ...  # pragma: no cover - a Protocol's signature


def encodes_everything(encoding: str | None) -> bool:
    """Whether ``encoding`` can encode any text (a UTF form); an unknown or missing one is taken as UTF-8.

    Args:
        encoding: a codec name as a stream reports it (``"UTF-8"``, ``"ANSI_X3.4-1968"``, ``"latin-1"``).
    """
    if not encoding:
        return True
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return True  # not ours to judge: the stream would have failed on open
    return name.startswith("utf")


def plain(text: str, stream: _HasEncoding | None = None) -> str:
    """``text`` with —, …, ✓ and ✗ replaced by ASCII where ``stream`` cannot encode them.

    Args:
        text: what is about to be printed.
        stream: where it goes: a text stream or a rich ``Console`` (default ``sys.stdout``).
    """
    target = sys.stdout if stream is None else stream
    # rich's Live puts a FileProxy in front of sys.stdout whose encoding is None: ask the stream behind it
    target = getattr(target, "rich_proxied_file", target)
    encoding = getattr(target, "encoding", None)
    if encodes_everything(encoding):
        return text
    assert encoding is not None  # encodes_everything is True without one
    for symbol, fallback in ASCII_FALLBACKS.items():
        if symbol in text:
            try:
                symbol.encode(encoding)
            except UnicodeEncodeError:
                text = text.replace(symbol, fallback)
    return text


def safe_streams() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` escape (``\\xfc``) what their encoding cannot encode.

    A board file named ``laterne-süd`` or a config path under ``中央区`` is then printed escaped on an
    ASCII or Latin-1 terminal instead of ending the command with a traceback. A strict UTF-8 stream
    writes a file name's undecodable bytes back as they were (``surrogateescape``); one that already does
    not raise is left as it is. Data (JSON, CSV, a file's content) bypasses this: :mod:`gateway.stdout_data`.
    """
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, io.TextIOWrapper) or stream.errors != "strict":
            continue
        if not encodes_everything(stream.encoding):
            stream.reconfigure(errors="backslashreplace")
        else:
            # UTF-8 cannot encode the stand-ins of a file name's undecodable bytes (laterne-s\xfcd.toml on a
            # UTF-8 system): write those bytes back, as Python does itself in the C locale
            stream.reconfigure(errors="surrogateescape")
