"""gateway.web.accept: a quote opens a quoted string only as a parameter's value (review L3: a stray quote
in a range swallowed the commas after it, and with them a later range's q=0)."""

from __future__ import annotations

import sys

from gateway.web.accept import gzip_allowed, weighted


def test_a_stray_quote_outside_a_parameter_value_does_not_swallow_the_rest() -> None:
    assert weighted('text/"html, application/json;q=0') == [('text/"html', 1.0), ("application/json", 0.0)]
    assert weighted('a"b, gzip;q=0') == [('a"b', 1.0), ("gzip", 0.0)]
    assert not gzip_allowed('x"y, gzip;q=0')


def test_a_quoted_parameter_value_keeps_its_commas_and_semicolons() -> None:
    assert weighted('application/json;v="a,b;c";q=0, text/csv') == [("application/json", 0.0), ("text/csv", 1.0)]
    assert weighted('text/html;v = "x,y" ;q=0.5') == [("text/html", 0.5)]
    assert weighted(r'text/html;v="a\",b";q=0, text/csv;q=0.2') == [("text/html", 0.0), ("text/csv", 0.2)]


def test_a_header_of_quotes_is_parsed_in_linear_time() -> None:
    """A 4 KB header of quotes (any client, no login) re-joined everything read so far at every quote: about
    0.2 s of the event loop per request (reviewer). Counted, not timed: the joins per parse stay at one per
    part, whatever the number of quotes. Test fails before (4,000 joins)."""
    joins = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal joins
        if event == "c_call" and getattr(arg, "__name__", "") == "join":
            joins += 1

    sys.setprofile(count)
    try:
        ranges = weighted('"' * 4000)
    finally:
        sys.setprofile(None)
    assert ranges == [('"' * 4000, 1.0)]
    assert joins <= 4, joins
