"""Data written to stdout (a file's content, a plan's JSON, CSV or GeoJSON) goes out as UTF-8 bytes.

Those formats are UTF-8 whatever the terminal's locale: through a Latin-1 or ASCII stdout they were
either refused with a traceback or, once the CLI escapes what a terminal cannot show
(:func:`hil.cli.text.safe_streams`), turned into invalid JSON (``\\u015b`` inside a string is fine, ``\\xe9``
is not). Text for a person goes through the text stream as before.
"""

from __future__ import annotations

import sys
from typing import TextIO


def write_utf8(text: str, stream: TextIO | None = None) -> None:
    """Write ``text`` to ``stream`` (default ``sys.stdout``) as UTF-8 bytes, past its text encoding; a stream
    without a byte buffer gets the text."""
    out = sys.stdout if stream is None else stream
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        out.write(text)
        return
    out.flush()  # what was printed before comes first
    buffer.write(text.encode("utf-8"))
    buffer.flush()
