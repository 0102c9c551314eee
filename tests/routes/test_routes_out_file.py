"""``routes plan --out``: what kind of file it replaces, and how a config-file error is labelled."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from routes_helpers import T0, run_cli
from routes_store import WINDOW_S, CityData


@pytest.fixture
def city(tmp_path: Path) -> Iterator[CityData]:
    data = CityData(tmp_path / "city")
    for i in range(3):
        data.add_device(f"bin-{i}", lat=f"52.{370 + i}", lon="4.89")
        data.windows(f"bin-{i}", T0 - 4 * WINDOW_S, [90] * 4)
    yield data
    data.close()


def plan_argv(city: CityData, *extra: str) -> list[str]:
    return ["routes", "plan", "--date", "2026-11-23", "--depot", "52.37,4.89", "--db", str(city.db_path),
            "--time-limit", "0", "--format", "csv", *extra]


def test_out_through_a_symlink_replaces_the_target_and_keeps_the_link(city: CityData, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The link was replaced by a regular file (and the file it pointed to kept the old plan). Test fails before."""
    target = tmp_path / "plans" / "crews.csv"
    target.parent.mkdir()
    target.write_text("vehicle,stop,bin_id\nold plan\n")  # an earlier plan CSV: replaced without --force
    link = tmp_path / "crews.csv"
    link.symlink_to(target)
    code, _, err = run_cli(plan_argv(city, "--out", str(link)), capsys)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("vehicle,stop,bin_id")
    assert sorted(p.name for p in target.parent.iterdir()) == ["crews.csv"]  # no temporary file left


def test_out_on_a_fifo_writes_into_it(city: CityData, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A FIFO (or a device such as /dev/null) was replaced by a regular file. Test fails before."""
    fifo = tmp_path / "plan.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    try:
        code, _, err = run_cli(plan_argv(city, "--out", str(fifo)), capsys)
    finally:
        if reader.is_alive():  # the plan did not open the FIFO: let the reader go
            try:  # non-blocking: a reader that just read to the end and closed leaves no one to open for
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: no reader any more
                pass
        reader.join(10)
    assert code == 0, err
    assert fifo.exists() and not fifo.is_file() and os.path.stat.S_ISFIFO(fifo.stat().st_mode)
    assert got and got[0].startswith("vehicle,stop,bin_id")


def test_out_on_a_directory_is_refused(city: CityData, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(plan_argv(city, "--out", str(tmp_path)), capsys)
    assert code == 2 and "is a directory" in err.lower() and tmp_path.is_dir()


def test_a_config_file_error_is_labelled_config_not_bin_data(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Test fails before ("no plan (bin_data)" and code bin_data in the file)."""
    cfg = tmp_path / "gateway.toml"
    cfg.write_text("[routes\n")
    out = tmp_path / "crews.csv"
    code, _, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--depot", "52.37,4.89", "--config",
                            str(cfg), "--format", "json", "--out", str(out)], capsys)
    assert code == 5 and "no plan (config)" in err and "bin_data" not in err, err
    assert '"code": "config"' in out.read_text()


def test_help_says_an_error_or_empty_day_still_replaces_out(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli(["routes", "plan", "--help"], capsys)
    text = " ".join(capsys.readouterr().out.split())
    assert "nothing due (its empty plan) or an error (the date and the error) replaces it too" in text
