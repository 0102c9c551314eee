"""Distances: great-circle, CSV matrix, OSRM table (local server), fallback when unreachable."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import pytest

from gateway.routes.distances import CsvMatrix, GreatCircle, OsrmTable, Place, build_matrix, haversine_m
from gateway.routes.errors import MatrixError, MatrixUnreachableError
from gateway.routes.planner import PlanSettings, plan_collection

from osrm_fake import DETOUR, FakeOsrm, closed_port, start_fake_osrm
from routes_helpers import DAY, DEPOT, scattered_bins

pytestmark = pytest.mark.timeout(60)

PLACES = [Place("depot", 52.37, 4.89), Place("a", 52.38, 4.90), Place("b", 52.36, 4.91), Place("c", 52.375, 4.88),
          Place("d", 52.371, 4.895)]


def test_haversine_known_distances() -> None:
    # Paris Notre-Dame to London Trafalgar Square is about 343.5 km great-circle
    assert haversine_m(48.8530, 2.3499, 51.5080, -0.1281) == pytest.approx(343_500, rel=0.005)
    assert haversine_m(0, 0, 0, 1) == pytest.approx(111_195, rel=1e-3)  # one degree on the equator
    assert haversine_m(10, 10, 10, 10) == 0.0
    assert haversine_m(0, 0, 0, 180) == pytest.approx(20_015_087, rel=1e-3)  # half the circumference


def test_great_circle_matrix_symmetric_zero_diagonal() -> None:
    m = GreatCircle().matrix(PLACES)
    assert all(m[i][i] == 0 for i in range(len(PLACES)))
    assert all(m[i][j] == m[j][i] > 0 for i in range(len(PLACES)) for j in range(len(PLACES)) if i != j)


def write_csv(path: Path, ids: list[str], value: str | None = None) -> Path:
    lines = ["id," + ",".join(ids)]
    for i, a in enumerate(ids):
        lines.append(a + "," + ",".join(value or str(100 * (i + 1) + j) for j in range(len(ids))))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_matrix_lookup_by_id_and_asymmetric(tmp_path: Path) -> None:
    ids = ["depot", "a", "b", "c", "d", "unused"]
    m = CsvMatrix(write_csv(tmp_path / "m.csv", ids)).matrix([PLACES[2], PLACES[0]])
    assert m == [[100 * 3 + 2, 100 * 3 + 0], [100 * 1 + 2, 100 * 1 + 0]]


@pytest.mark.parametrize(("content", "problem"), [
    ("", "header row"),
    ("id,depot,a\ndepot,0,1\na,1\n", "distances for"),
    ("id,depot,a\ndepot,0,x\na,1,0\n", "not a number"),
    ("id,depot,a\ndepot,0,\uff11\uff12\na,1,0\n", "not a number"),  # full-width 12: ASCII digits only
    ("id,depot,a\ndepot,0,1_200\na,1,0\n", "not a number"),
    ("id,depot,a\ndepot,0,-5\na,1,0\n", "distance >= 0"),
    ("id,depot,depot\ndepot,0,1\n", "duplicate"),
    ("id,depot,a\ndepot,0,1\ndepot,1,0\n", "duplicate row"),
    # a ';' file is read when its header starts with id (test_routes_german_input); a tab-separated one is not
    ("id\tdepot\ta\ndepot\t0\t1\na\t1\t0\n", "header row names no place ids (this file separates cells with a tab"),
])
def test_csv_matrix_errors(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(MatrixError) as info:
        CsvMatrix(path)
    assert problem in info.value.problem


def test_csv_matrix_with_a_byte_order_mark(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" (a BOM first) is read as the bin-volumes CSV is."""
    path = tmp_path / "m.csv"
    path.write_bytes(b"\xef\xbb\xbfid,depot,a\r\ndepot,0,12\r\na,21,0\r\n")
    assert CsvMatrix(path).matrix([PLACES[0], PLACES[1]]) == [[0, 12], [21, 0]]


def test_csv_matrix_missing_ids_and_file(tmp_path: Path) -> None:
    matrix = CsvMatrix(write_csv(tmp_path / "m.csv", ["depot", "a"]))
    with pytest.raises(MatrixError) as info:
        matrix.matrix(PLACES)
    assert info.value.missing == ("b", "c", "d")
    with pytest.raises(MatrixError):
        CsvMatrix(tmp_path / "absent.csv")


def test_csv_errors_are_not_swallowed(tmp_path: Path) -> None:
    matrix = CsvMatrix(write_csv(tmp_path / "m.csv", ["depot", "a"]))
    with pytest.raises(MatrixError):
        build_matrix(matrix, PLACES)


async def test_osrm_table_in_blocks() -> None:
    fake = FakeOsrm(max_table=2)
    runner, url = await start_fake_osrm(fake)
    try:
        provider = OsrmTable(url, block=2)
        m = await asyncio.to_thread(provider.matrix, PLACES)
    finally:
        await runner.cleanup()
    for i, a in enumerate(PLACES):
        for j, b in enumerate(PLACES):
            assert m[i][j] == round(round(DETOUR * haversine_m(a.lat, a.lon, b.lat, b.lon), 1))
    assert len(fake.requests) == 9  # 3 x 3 blocks for 5 places
    assert all(len(r["sources"]) * len(r["destinations"]) <= 4 for r in fake.requests)
    assert all(r["profile"] == "driving" for r in fake.requests)


async def test_osrm_too_big_falls_back_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    runner, url = await start_fake_osrm(FakeOsrm(max_table=2))
    try:
        with caplog.at_level(logging.WARNING):
            m, source, warnings = await asyncio.to_thread(build_matrix, OsrmTable(url, block=10), PLACES)
    finally:
        await runner.cleanup()
    assert m == GreatCircle().matrix(PLACES)
    assert source.startswith("great-circle (fallback")
    assert "TooBig" in warnings[0]
    assert "falling back to great-circle" in caplog.text


async def test_osrm_null_pair_uses_great_circle_for_it() -> None:
    a, b = PLACES[1], PLACES[2]
    runner, url = await start_fake_osrm(FakeOsrm(null_pair=((round(a.lon, 6), round(a.lat, 6)),
                                                            (round(b.lon, 6), round(b.lat, 6)))))
    try:
        m, source, warnings = await asyncio.to_thread(build_matrix, OsrmTable(url), PLACES)
    finally:
        await runner.cleanup()
    assert source == f"OSRM {url}"
    assert m[1][2] == round(haversine_m(a.lat, a.lon, b.lat, b.lon))
    assert m[2][1] == round(round(DETOUR * haversine_m(a.lat, a.lon, b.lat, b.lon), 1))
    assert warnings == ["OSRM could not route 1 pair; great-circle used for it"]


async def test_osrm_non_json_answer_falls_back() -> None:
    runner, url = await start_fake_osrm(FakeOsrm())
    try:
        provider = OsrmTable(url + "/broken")
        with pytest.raises(MatrixError) as info:
            await asyncio.to_thread(provider.matrix, PLACES)
        _, source, _ = await asyncio.to_thread(build_matrix, provider, PLACES)
    finally:
        await runner.cleanup()
    assert "not JSON" in info.value.problem
    assert source.startswith("great-circle")


def test_osrm_unreachable_port_raises_then_plan_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    provider = OsrmTable(f"http://127.0.0.1:{closed_port()}", timeout_s=2)
    with pytest.raises(MatrixUnreachableError) as info:
        provider.matrix(PLACES)
    assert info.value.timed_out is False
    bins = scattered_bins(12, seed=1, full_share=1.0)
    with caplog.at_level(logging.WARNING):
        plan = plan_collection(bins, PlanSettings(day=DAY, depot=DEPOT, time_limit_s=0, distances=provider))
    assert plan.distance_source.startswith("great-circle (fallback: OSRM http://127.0.0.1:")
    assert any("unreachable" in w and "great-circle" in w for w in plan.warnings)
    assert plan.stop_count == 12
    assert "unreachable" in caplog.text


async def test_plan_with_osrm_uses_road_distances() -> None:
    bins = scattered_bins(15, seed=4, full_share=1.0)
    runner, url = await start_fake_osrm(FakeOsrm())
    try:
        road = await asyncio.to_thread(plan_collection, bins, PlanSettings(
            day=DAY, depot=DEPOT, time_limit_s=0, distances=OsrmTable(url)))
    finally:
        await runner.cleanup()
    gc = plan_collection(bins, PlanSettings(day=DAY, depot=DEPOT, time_limit_s=0))
    assert road.distance_source == f"OSRM {url}"
    assert road.total_distance_m == pytest.approx(DETOUR * gc.total_distance_m, rel=0.01)


@pytest.mark.parametrize("url", ["ftp://x", "localhost:5000", "http://"])
def test_osrm_bad_url(url: str) -> None:
    with pytest.raises(MatrixError):
        OsrmTable(url)


def test_osrm_silent_server_times_out_and_plan_falls_back() -> None:
    # A listening socket that never answers: the TCP connection is accepted by the kernel, no reply comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        provider = OsrmTable(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(MatrixUnreachableError) as info:
            provider.matrix(PLACES)
        assert time.monotonic() - started < 5
        assert info.value.timed_out is True and "no answer within 0.5 s" in info.value.problem
        _, source, warnings = build_matrix(provider, PLACES)
    assert source.startswith("great-circle (fallback") and warnings
