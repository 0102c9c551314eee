"""Board coordinates of a scenario as the decimal text the gateway registry stores."""

from __future__ import annotations

import pytest

from hil.scenarios.loader import decimal_degrees_text


@pytest.mark.parametrize(("value", "text"), [(-0.0, "0.0"), (0, "0"), (-1e-05, "-0.00001"), (52.37, "52.37"),
                                             (-4.8, "-4.8")])
def test_decimal_degrees_text_writes_a_negative_zero_without_its_sign(value: float, text: str) -> None:
    assert decimal_degrees_text(value, where="boards[0].lat") == text
