"""``routes plan --matrix FILE`` (and ``[routes] matrix``) reads a regular file of at most 256 MiB
(``MATRIX_MAX``: a 4,000-bin matrix is about 100 MB), opened without blocking. Before, a FIFO hung the
plan for ever and a device (/dev/zero) was read until memory ran out. Tests fail before."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.routes.distances import MATRIX_MAX, CsvMatrix
from gateway.routes.errors import MatrixError

from routes_helpers import T0
from routes_store import WINDOW_S, CityData

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CityData]:
    """Two full bins near the depot."""
    data = CityData(tmp_path_factory.mktemp("city"))
    for i in range(2):
        data.add_device(f"bin-{i}", lat=f"52.{371 + i}", lon="4.89")
        data.windows(f"bin-{i}", T0 - 4 * WINDOW_S, [90] * 4)
    yield data
    data.close()


def test_plan_with_a_fifo_as_matrix_exits_2_at_once(city: CityData, tmp_path: Path) -> None:
    fifo = tmp_path / "roads.csv"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "routes", "plan", "--date", "2026-11-23",
                           "--depot", "52.37,4.89", "--db", str(city.db_path), "--time-limit", "0",
                           "--matrix", str(fifo)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "cannot read file (is a FIFO, not a regular file)" in proc.stderr and str(fifo) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_device_and_a_file_over_the_cap_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match=r"cannot read file \(is a character device, not a regular file\)"):
        CsvMatrix("/dev/zero")
    big = tmp_path / "roads.csv"
    with big.open("wb") as fh:  # sparse: no disk used
        fh.truncate(MATRIX_MAX + 1)
    with pytest.raises(MatrixError) as info:
        CsvMatrix(big)
    assert "cannot read file (larger than 256 MiB, the most this file may hold: a matrix of 4,000 bins and the " \
           "depot takes about 100 MB)" in str(info.value)


def test_a_fifo_does_not_block_the_loader(tmp_path: Path) -> None:
    fifo = tmp_path / "roads.csv"
    os.mkfifo(fifo)
    caught: list[BaseException] = []

    def load() -> None:
        try:
            CsvMatrix(fifo)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            caught.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():
        with open(fifo, "wb"):  # free the blocked read
            pass
        t.join(10)
        pytest.fail("CsvMatrix blocked on a FIFO")
    assert len(caught) == 1 and isinstance(caught[0], MatrixError)
