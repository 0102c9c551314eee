"""``Accept`` and ``Accept-Encoding`` as (range, q) pairs (RFC 9110 12.4.2, 12.5.1): the one parser of every
negotiating endpoint (gateway.web.opendata, and every JSON answer's gzip: gateway.web.context). Parsing
only, no I/O.

A q of 0 means "not acceptable"; a q that is not a number from 0 to 1 (``q=x``, ``q=nan``, ``q=2``) is
ignored, so the range counts as q = 1. Commas and semicolons inside a quoted parameter value
(``text/html;foo="a,b"``) are part of the value, not separators.
"""

from __future__ import annotations

import math


def _split(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside double-quoted strings (a backslash escapes the next character); a quote
    opens one only right after ``=`` (a parameter's value), so a stray quote cannot swallow the rest."""
    parts: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    last = ""  # the last character of cur that is not a space (linear time: a header of quotes cannot stall the loop)
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"' and (quoted or last == "="):
            quoted = not quoted  # a quoted string only as a parameter's value: a stray quote elsewhere is text
        elif ch == sep and not quoted:
            parts.append("".join(cur))
            cur, last = [], ""
            continue
        cur.append(ch)
        if not ch.isspace():
            last = ch
    parts.append("".join(cur))
    return parts


def weighted(header: str) -> list[tuple[str, float]]:
    """``header`` (``Accept``, ``Accept-Encoding``) as (range lowercased, q) pairs in the header's order; a
    lone ``*`` (sent by some old clients as a media range, and meaning any coding) is read as ``*/*``."""
    out = []
    for part in _split(header, ","):
        bits = [b.strip() for b in _split(part, ";")]
        if not bits[0]:
            continue
        q = 1.0
        for b in bits[1:]:
            if b.lower().startswith("q="):
                try:
                    q = float(b[2:])
                except ValueError:
                    q = 1.0
                if not (math.isfinite(q) and 0.0 <= q <= 1.0):
                    q = 1.0
        rng = bits[0].lower()
        out.append(("*/*" if rng == "*" else rng, q))
    return out


def gzip_allowed(header: str) -> bool:
    """``Accept-Encoding`` ``header`` allows gzip: ``gzip`` (or ``x-gzip``) with q > 0, or else ``*`` with q > 0
    (RFC 9110 12.5.3: the most specific entry decides, so ``gzip;q=0, *`` refuses it). No header (""):
    identity, as most servers read it (a client that sends none may not decode gzip)."""
    rated = weighted(header)  # (a lone "*" is read as "*/*" there)
    named = [q for coding, q in rated if coding in ("gzip", "x-gzip")]
    if named:  # gzip and its alias x-gzip are one coding: either one allowing it is enough
        return max(named) > 0
    wildcard = [q for coding, q in rated if coding == "*/*"]
    return bool(wildcard) and max(wildcard) > 0
