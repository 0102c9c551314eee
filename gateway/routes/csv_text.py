"""The rows of the planner's CSV inputs (bin volumes, distance matrix), as spreadsheets save them.

German Excel (and that of other locales whose decimal mark is a comma) saves "CSV" with ``;``
between cells and decimal commas, and its plain "CSV" in Windows-1252; only "CSV UTF-8" is UTF-8.
A file is read as ``;``-separated when its header says so (first cell ``id``, cells split on
``;``); in such a file a number may have a decimal comma (``240,5``). A comma-separated file keeps
the decimal point. A UTF-8 byte order mark is skipped; other text encodings are refused naming the
line and column of the first byte that is not UTF-8.
"""

from __future__ import annotations

import csv
import io
import re

from gateway.toml_text import UTF16_MARKS, utf8_error_position

#: The header's first cell in both CSV inputs.
ID_CELL = "id"
_DECIMAL_COMMA_RE = re.compile(r"([-+]?[0-9]+),([0-9]+)\Z")
# Excel's number format with thousands separators in a decimal-comma locale: 1.100,5
_GROUPED_DECIMAL_COMMA_RE = re.compile(r"([-+]?[1-9][0-9]{0,2}(?:\.[0-9]{3})+),([0-9]+)\Z")


class CsvTextError(ValueError):
    """A CSV file that is not UTF-8 text; ``str(error)`` is the problem, without the file's name."""


def decode_csv_bytes(data: bytes) -> str:
    """``data`` as text: UTF-8, a leading byte order mark skipped (Excel's "CSV UTF-8" writes one).

    Raises:
        CsvTextError: UTF-16 (a byte order mark), or bytes that are not UTF-8: the first is named with
            its line and column, and what it would be in Windows-1252 (Excel's plain "CSV").
    """
    if data.startswith(UTF16_MARKS):
        raise CsvTextError("not UTF-8 text (it starts with a UTF-16 byte order mark: Excel's \"Unicode text\"?); "
                           "save as CSV UTF-8")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        start = exc.start
        line, column = utf8_error_position(data, start)
        byte = data[start]
        try:
            as_1252 = f" ({bytes([byte]).decode('cp1252')!r} in Windows-1252)"
        except UnicodeDecodeError:
            as_1252 = ""
        raise CsvTextError(f"not UTF-8 text: line {line}, column {column} has byte 0x{byte:02x}{as_1252}; "
                           "saved as Windows-1252? save as CSV UTF-8") from None


def _first_row(text: str, delimiter: str) -> list[str]:
    for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
        if row and any(c.strip() for c in row):
            return row
    return []


def csv_table(text: str) -> tuple[list[list[str]], str]:
    """The non-blank rows of ``text`` and their separator, ``,`` or ``;``.

    ``;`` when the header read with ``,`` does not start with the cell ``id`` but read with ``;``
    does and has more cells (``id;volume_l``); otherwise ``,``, so a comma file is read exactly as
    before and any other header is reported by the caller as wrong.
    """
    delimiter = ","
    first = _first_row(text, ",")
    if first and first[0].strip() != ID_CELL:
        semi = _first_row(text, ";")
        if len(semi) > 1 and semi[0].strip() == ID_CELL:
            delimiter = ";"
    rows = [_without_trailing_empty(r) for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
            if r and any(c.strip() for c in r)]
    return rows, delimiter


def _without_trailing_empty(row: list[str]) -> list[str]:
    """``row`` without the empty cells at its end (Excel writes them when its used range is wider)."""
    end = len(row)
    while end > 1 and not row[end - 1].strip():
        end -= 1
    return row[:end]


def number_text(cell: str, delimiter: str) -> str:
    """``cell`` in decimal-point notation: in a ``;`` file ``240,5`` becomes ``240.5``; else unchanged.

    The result is still text for the callers' checks (ASCII digits, bounds, thousands separators);
    a converted one is the float's shortest form (``1,100`` gives ``1.1``: a decimal comma is no
    thousands separator; ``1.100,5``, Excel's grouped format, gives ``1100.5``).
    """
    if delimiter == ";":
        text = cell.strip(" \t\r\n\f\v")
        grouped = _GROUPED_DECIMAL_COMMA_RE.match(text)
        if grouped:  # the comma is the decimal mark, so the points can only group thousands
            return repr(float(f"{grouped.group(1).replace('.', '')}.{grouped.group(2)}"))
        match = _DECIMAL_COMMA_RE.match(text)
        if match:
            return repr(float(f"{match.group(1)}.{match.group(2)}"))
    return cell
