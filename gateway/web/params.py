"""Query-parameter parsing: every bad value becomes a :class:`BadParameter` naming the parameter."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime, timezone
from typing import Iterable, Mapping

from gateway.registry.zones import normalize_zone, unknown_zone_hint, zone_problem
from gateway.web.errors import BadParameter
from gateway.web.views import ReadingKey

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
FIELD_RE = re.compile(r"^[A-Za-z0-9_]{1,32}$")
MAX_CURSOR_CHARS = 256
MAX_LISTED_ZONES = 50  # how many known zones an unknown-zone error names
MAX_RANGE_S = 366 * 86400
# Refuse timestamps outside 2000..2100: almost certainly ms instead of s, or garbage.
_MIN_TS, _MAX_TS = 946684800, 4102444800
MIN_TS = _MIN_TS  # the earliest time a parameter may name (2000-01-01T00:00:00Z)
# Integers are ASCII digits only: ``\d`` and ``int()`` also take other scripts' digits ("１" is 1).
INTEGER_RE = re.compile(r"-?[0-9]{1,18}")
# What surrounds a value and is ignored: ASCII white space only (``str.strip()`` also drops U+3000).
# What str.strip() of a parameter removes (ASCII white space); opendata refuses a time containing it.
SPACE = " \t\r\n\f\v"


_LOST_OFFSET_SIGN_RE = re.compile(r":\d{2}(?:\.\d+)? \d{2}(?::?\d{2})?$")  # '...12:00:00 02:00': the '+' decoded to a space


def parse_time(value: str, name: str) -> int:
    """Parse unix seconds (``1700000000``) or ISO 8601 (``2026-01-02T03:00:00Z``) to unix seconds."""
    text = value.strip(SPACE)
    if not text.isascii():
        raise BadParameter(f"'{name}' must be unix seconds or an ISO 8601 date-time in ASCII, got {value!r}",
                           param=name)
    if INTEGER_RE.fullmatch(text):
        ts = int(text)
    else:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            # an unencoded '+02:00' arrives as ' 02:00': the usual cause of a space inside the value
            lost_sign = _LOST_OFFSET_SIGN_RE.search(text)
            hint = " (a '+' in a URL is a space; write %2B, e.g. 12:00:00%2B02:00)" if lost_sign else ""
            raise BadParameter(
                f"'{name}' must be unix seconds or an ISO 8601 date-time{hint}, got {value!r}", param=name
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        ts = int(parsed.timestamp())
    if not _MIN_TS <= ts < _MAX_TS:
        raise BadParameter(f"'{name}' = {value!r} ({ts} unix seconds) is outside 2000..2100; give unix seconds"
                           " (not milliseconds) or an ISO 8601 date-time", param=name)
    return ts


def parse_range(
    query: Mapping[str, str], *, now: int, default_s: int, max_s: int = MAX_RANGE_S
) -> tuple[int, int]:
    """Read ``from``/``to`` (defaults: the last ``default_s`` seconds up to ``now``; at most ``max_s``).

    A ``from`` or ``to`` given outside 2000..2100 is refused (:func:`parse_time`); the default ``from``,
    counted back from ``to``, is clamped to :data:`MIN_TS` instead (``to=2000-01-01T12:00:00Z`` reads
    from 2000-01-01T00:00:00Z), as every endpoint with a range does (:func:`default_since`)."""
    until = parse_time(query["to"], "to") if "to" in query else now + 1
    since = parse_time(query["from"], "from") if "from" in query else default_since(until, default_s)
    if "from" not in query and since >= until:
        # 'to' at 2000-01-01T00:00:00Z: no time is left after the earliest 'from'.
        raise BadParameter(f"'to' ({until}) leaves no time after 2000-01-01T00:00:00Z, the earliest 'from';"
                           " give a later 'to'", param="to")
    if since >= until:
        raise BadParameter(f"'from' ({since}) must be before 'to' ({until})", param="from")
    if until - since > max_s:
        # Blame a parameter the client gave: with only 'from', 'to' is the default (now).
        raise BadParameter(f"time range longer than {max_s // 86400} days",
                           param="to" if "to" in query else "from")
    return since, until


def default_since(until: int, span_s: int) -> int:
    """The default ``from`` of a range ending at ``until``: ``span_s`` before it, but not before
    :data:`MIN_TS` (2000-01-01T00:00:00Z), where a ``from`` given must begin: a default the client did
    not write is clamped there rather than refused (QA LOW: ``to=2000-01-01T12:00:00Z`` gave 200 from
    1999-12-31T12:00Z on /api but 400 on the CSV exports)."""
    return max(until - span_s, MIN_TS)


def parse_int(query: Mapping[str, str], name: str, *, default: int, low: int, high: int) -> int:
    """Read an integer parameter within ``[low, high]``."""
    if name not in query:
        return default
    text = query[name].strip(SPACE)
    if not INTEGER_RE.fullmatch(text):
        raise BadParameter(f"'{name}' must be an integer, got {query[name]!r}", param=name)
    value = int(text)
    if not low <= value <= high:
        raise BadParameter(f"'{name}' must be between {low} and {high}, got {value}", param=name)
    return value


def parse_fields(query: Mapping[str, str], known: Iterable[str], name: str = "field") -> list[str] | None:
    """Read a comma-separated field list; every field must be one the policy knows.

    ASCII white space around a field is ignored (``fill, temp``). An empty item (``fill,``,
    ``,fill``, ``fill,,temp``, or an empty value) is refused, as :func:`parse_choice_list` refuses
    one: a list cut short must not quietly select fewer fields.
    """
    if name not in query:
        return None
    allowed = set(known)
    fields = [f.strip(SPACE) for f in query[name].split(",")]
    if not any(fields):
        raise BadParameter(f"'{name}' is empty; give a comma list of field names", param=name)
    if not all(fields):
        raise BadParameter(f"'{name}' has an empty item in {query[name]!r}; give a comma list of field names",
                           param=name)
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise BadParameter(
            f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}", param=name
        )
    return fields


def parse_device_id(value: str, name: str = "device") -> str:
    """Validate a device id (protocol §1: 1..32 of ``[A-Za-z0-9._-]``)."""
    if not DEVICE_ID_RE.fullmatch(value):
        raise BadParameter(f"'{name}' must be 1..32 characters of [A-Za-z0-9._-], got {value!r}", param=name)
    return value


def parse_zone(query: Mapping[str, str], known: Iterable[str], name: str = "zone") -> str | None:
    """Read an optional zone name; it must be one of ``known`` (the zones of the registered devices),
    compared exactly after NFC normalisation (the registry stores NFC): zone names are case-sensitive.
    An unknown zone is refused as an unknown field is, naming the known ones (a typo must not answer an
    empty list as if the zone had no data)."""
    if name not in query:
        return None
    value = normalize_zone(query[name])  # the registry stores NFC: ?zone=Su%CC%88dstadt is "Südstadt"
    problem = zone_problem(value)
    if problem:
        shown = repr(value) if len(value) <= 40 else f"{value[:40]!r}... ({len(value)} characters)"
        raise BadParameter(f"{name} {shown} {problem} (as the registry's zones)", param=name)
    zones = sorted(set(known))
    if value not in zones:
        hint = unknown_zone_hint(value, zones)  # STRASSE finds Straße, fullwidth Ｃentre centre
        shown = ", ".join(zones[:MAX_LISTED_ZONES]) or "none"
        more = f" and {len(zones) - MAX_LISTED_ZONES} more" if len(zones) > MAX_LISTED_ZONES else ""
        raise BadParameter(f"unknown zone {value!r}{hint}; known: {shown}{more}", param=name)
    return value


def parse_choice(query: Mapping[str, str], name: str, choices: Iterable[str], *, default: str | None) -> str | None:
    """Read a parameter that must be one of ``choices``."""
    if name not in query:
        return default
    options = list(choices)
    if query[name] not in options:
        raise BadParameter(f"'{name}' must be one of {', '.join(options)}, got {query[name]!r}", param=name)
    return query[name]


def parse_choice_list(query: Mapping[str, str], name: str, choices: Iterable[str]) -> list[str] | None:
    """Read a comma-separated list whose every item is one of ``choices`` (None when absent).

    NGSI-LD's ``type=Streetlight,WasteContainer``. ASCII whitespace around an item is ignored, as
    :func:`parse_fields` ignores it (``Streetlight, WasteContainer``). As in a field list, an empty
    item (``Streetlight,``, ``,``, ``Streetlight, ``) is refused, as is one not in ``choices``, the
    way :func:`parse_choice` refuses a value (``bad_parameter`` naming ``name``): an empty type would
    match nothing, and a list cut short should not quietly select fewer types. Repeats are dropped.
    """
    if name not in query:
        return None
    options = list(choices)
    items = [item.strip(SPACE) for item in query[name].split(",")]
    for item in items:
        if item not in options:
            raise BadParameter(f"'{name}' must be one of {', '.join(options)} or a comma list of them, got {item!r}",
                               param=name)
    return list(dict.fromkeys(items))


def reject_unknown(query: Mapping[str, str], allowed: Iterable[str]) -> None:
    """Refuse parameters the endpoint does not know (a typo must not silently widen a query)."""
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise BadParameter(f"unknown parameter(s): {', '.join(unknown)}", param=unknown[0])


def encode_cursor(key: ReadingKey) -> str:
    """The opaque page cursor of a readings position (``next`` in /api/readings)."""
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_cursor(query: Mapping[str, str], name: str = "after") -> ReadingKey | None:
    """Read a page cursor made by :func:`encode_cursor` (the ``next`` of the previous page)."""
    if name not in query:
        return None
    text = query[name].strip()
    bad = BadParameter(f"'{name}' must be the 'next' value of a previous page, unchanged", param=name)
    if not text or len(text) > MAX_CURSOR_CHARS:
        raise bad
    try:
        key = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if not (isinstance(key, list) and len(key) == 4 and type(key[0]) is int and isinstance(key[1], str)
            and type(key[2]) is int and isinstance(key[3], str) and DEVICE_ID_RE.fullmatch(key[1])
            and FIELD_RE.fullmatch(key[3]) and _MIN_TS <= key[0] < _MAX_TS and 0 <= key[2] < 2 ** 63):
        raise bad
    return (key[0], key[1], key[2], key[3])
