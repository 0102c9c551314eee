"""An unencoded ``+02:00`` in an /api query arrives as `` 02:00`` (a '+' in a URL is a space): the 400 says
to write %2B, as the open-data answer does (DST QA: docs/api.md had no hint and neither had the error)."""

from __future__ import annotations

import pytest

from gateway.web.errors import BadParameter
from gateway.web.params import parse_time


def test_a_space_where_the_offset_sign_was_gets_the_percent_2b_hint() -> None:
    with pytest.raises(BadParameter) as err:
        parse_time("2026-10-25T12:00:00 02:00", "from")
    assert "write %2B" in str(err.value) and "'from'" in str(err.value)


def test_other_bad_times_get_no_such_hint_and_the_encoded_offset_is_read() -> None:
    for bad in ("yesterday", "2026-13-21 08:00"):  # review: a bad month with a space before the time is not it
        with pytest.raises(BadParameter) as err:
            parse_time(bad, "to")
        assert "%2B" not in str(err.value), bad
    with pytest.raises(BadParameter) as err:
        parse_time("2026-10-25T12:00:00.5 0200", "to")
    assert "write %2B" in str(err.value)
    assert parse_time("2026-10-25T12:00:00+02:00", "to") == parse_time("2026-10-25T10:00:00Z", "to")
