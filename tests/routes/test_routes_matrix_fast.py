"""The great-circle matrix is vectorised and a matrix is checked once (QA MEDIUM: 2500 bins took 27 s,
most of it computing and re-checking the matrix in pure Python)."""

from __future__ import annotations

import random

import pytest

from gateway.routes.distances import (
    MAX_GREAT_CIRCLE_M,
    CheckedMatrix,
    GreatCircle,
    Place,
    build_matrix,
    check_matrix,
    haversine_m,
)
from gateway.routes.errors import MatrixError


def _places(n: int, seed: int = 5) -> list[Place]:
    rng = random.Random(seed)
    far = [Place("a", -52.0, -175.0), Place("b", 52.0, 4.9), Place("c", 0.0, 0.0), Place("d", 0.0, 180.0),
           Place("n", 90.0, 0.0), Place("s", -90.0, 0.0), Place("e", 52.37, 4.89), Place("f", 52.37, 4.89)]
    return far + [Place(f"p{i}", 52.3 + rng.random() * 0.1, 4.8 + rng.random() * 0.15) for i in range(n)]


def test_vectorised_great_circle_equals_the_haversine_of_each_pair() -> None:
    places = _places(250)
    m = GreatCircle().matrix(places)
    assert m == [[round(haversine_m(a.lat, a.lon, b.lat, b.lon)) for b in places] for a in places]
    assert all(type(v) is int for row in m for v in row)  # plain ints, for the solver and the JSON output
    assert max(map(max, m)) <= MAX_GREAT_CIRCLE_M and GreatCircle().matrix([]) == []


def test_a_checked_matrix_is_not_checked_or_copied_again() -> None:
    places = _places(20)
    matrix, _, _ = build_matrix(GreatCircle(), places)
    assert isinstance(matrix, CheckedMatrix)
    assert check_matrix(matrix, "x", len(places)) is matrix
    with pytest.raises(MatrixError, match="must be 3x3"):
        check_matrix(matrix, "x", 3)  # its size is still checked


@pytest.mark.parametrize("bad", [True, 0.5, -1, MAX_GREAT_CIRCLE_M + 1, float("nan"), "7"])
def test_the_row_at_a_time_check_still_refuses_each_bad_value(bad: object) -> None:
    rows = [[0, 5, 7], [5, 0, bad], [7, 9, 0]]
    with pytest.raises(MatrixError, match=r"\[1\]\[2\]"):
        check_matrix(rows, "custom", 3)


def test_whole_floats_and_plain_rows_pass_as_int() -> None:
    out = check_matrix([[0, 1500.0], [1500, 0]], "custom", 2)
    assert out == [[0, 1500], [1500, 0]] and type(out[0][1]) is int and isinstance(out, CheckedMatrix)


def test_a_checked_matrix_cannot_be_made_outside_the_checks() -> None:
    """CheckedMatrix([[0, -5], [10**30, 0]]) passed check_matrix unchecked. Test fails before."""
    with pytest.raises(TypeError, match="check_matrix"):
        CheckedMatrix([[0, -5], [10**30, 0]])
    with pytest.raises(MatrixError, match="not whole metres"):
        check_matrix([[0, -5], [10**30, 0]], "test", 2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_great_circle_refuses_a_place_without_a_finite_location(bad: float) -> None:
    """NaN or infinite coordinates became INT64_MIN distances inside a CheckedMatrix. Test fails before."""
    with pytest.raises(MatrixError, match="latitude/longitude"):
        GreatCircle().matrix([Place("depot", 52.37, 4.89), Place("b", bad, 4.89)])
