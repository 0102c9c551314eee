"""One rule for text cells of every CSV the gateway writes (open data, collection plans)."""

from __future__ import annotations

from typing import Any

# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection"); tab and
# carriage return because some spreadsheets strip them and read what follows.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutral_cell(value: Any) -> Any:
    """``value`` with a ``'`` prefixed when it is text a spreadsheet would run as a formula (a device id
    ``-rf``, a zone ``=HYPERLINK(...)``); numbers and other text unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
