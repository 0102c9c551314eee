"""`boards check` reports every problem of a board file in one run, each with its dotted key, without
follow-on noise (QA LOW: validation stopped at the first problem). Wording: a bound of one value
says "must be 1"; a negative pin "is not a GPIO number"."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.resources import boards_dir
from hil.boards import BoardError, InvalidValueError, PinNotOnChipError, UnknownChipError, load_board
from hil.cli.main import main

STREETLIGHT = (boards_dir() / "streetlight-esp32.toml").read_text()
BIN = (boards_dir() / "bin-esp32c3.toml").read_text()


def edited(tmp_path: Path, base: str, *changes: tuple[str, str]) -> Path:
    text = base
    for old, new in changes:
        assert text.count(old) == 1, f"test setup: {old!r} must occur once"
        text = text.replace(old, new)
    path = tmp_path / "many.toml"
    path.write_text(text)
    return path


MANY = (('schema = 1', 'schema = 2'), ('name = "streetlight-esp32"', 'name = "sl bad / x"'),
        ("pin = 27\n", "pin = -1\n"), ("pin = 34\n", "pin = 6\n"), ('mode = "pwm"', 'mode = "pwm"\ncolour = "red"'),
        ("interval_s = 5 ", "interval_s = 0 "), ("tolerance_pct = 30", "tolerance_pct = 300"),
        ("on_lux = 30", "on_lux = 90"))


def fields(exc: BoardError) -> list[str]:
    return [getattr(p, "field", None) or getattr(p, "use", None) or type(p).__name__ for p in exc.problems]


def test_every_problem_in_one_run_in_file_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = edited(tmp_path, STREETLIGHT, *MANY)
    with pytest.raises(InvalidValueError) as info:  # the first problem is raised, as before
        load_board(path)
    assert info.value.field == "schema" and info.value.problems[0] is info.value
    assert fields(info.value) == ["schema", "name", "io.pir.pin", "io.light.pin", "io.lamp.colour",
                                  "calibration.lamp.tolerance_pct", "sleep.interval_s", "app.off_lux"]
    assert main(["boards", "check", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines[:-1]] == ["error"] * 8
    assert lines[0] == f"error: {path}: field 'schema' = 2: must be 1"
    assert lines[2].startswith(f"error: {path}: 'io.pir.pin': pin -1 is not a GPIO number; free GPIOs for an input with a pull resistor: ")
    assert lines[-1] == f"{path}: 8 problems"


def test_wording_of_a_one_value_bound_and_a_negative_pin(tmp_path: Path) -> None:
    with pytest.raises(InvalidValueError) as info:
        load_board(edited(tmp_path, STREETLIGHT, ('schema = 1', 'schema = 2')))
    assert info.value.reason == "must be 1" and len(info.value.problems) == 1
    with pytest.raises(PinNotOnChipError) as pin:
        load_board(edited(tmp_path, STREETLIGHT, ("pin = 27\n", "pin = -1\n")))
    assert "'io.pir.pin': pin -1 is not a GPIO number" in str(pin.value) and "GPIO-1" not in str(pin.value)


def test_an_unknown_chip_does_not_turn_every_pin_into_a_problem(tmp_path: Path) -> None:
    with pytest.raises(UnknownChipError) as info:
        load_board(edited(tmp_path, STREETLIGHT, ('chip = "esp32"', 'chip = "esp32c6"'),
                          ("tolerance_pct = 30", "tolerance_pct = 300")))
    assert fields(info.value) == ["UnknownChipError", "calibration.lamp.tolerance_pct"]


def test_a_wrong_kind_skips_what_depends_on_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidValueError) as info:
        load_board(edited(tmp_path, BIN, ('kind = "bin"', 'kind = "skip"'), ("timeout_ms = 30000", "timeout_ms = 5")))
    # no unknown-field noise for [io], [calibration], [app], nor wake pins naming io roles
    assert fields(info.value) == ["kind", "watchdog.timeout_ms"]


def test_a_broken_io_role_is_not_reported_again_by_the_wake_pins(tmp_path: Path) -> None:
    with pytest.raises(BoardError) as info:
        load_board(edited(tmp_path, BIN, ("pin = 3\n", "pin = 12\n"), ("empty_mm = 1000", "empty_mm = 100")))
    # the lid on a flash pin; fill's full_mm (150) is not below empty_mm: two problems, not a third for
    # wake_pins = ["lid", ...]
    assert fields(info.value) == ["io.lid.pin", "calibration.fill.full_mm"]


def test_list_says_how_many_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site"
    site.mkdir()
    edited(site, STREETLIGHT, *MANY[2:4])
    monkeypatch.setenv("CIVICEDGE_BOARDS", str(site))
    assert main(["boards", "list"]) == 1
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("many:"))
    assert "INVALID" in line and f"(and 1 more: civicedge boards check {site / 'many.toml'})" in line


def test_valid_boards_and_single_problems_are_unchanged(tmp_path: Path) -> None:
    assert load_board("streetlight-esp32").name == "streetlight-esp32"
    assert load_board("bin-esp32c3").sleep.wake_pins == ("lid", "tilt")
    with pytest.raises(InvalidValueError) as info:
        load_board(edited(tmp_path, STREETLIGHT, ("on_lux = 30", "on_lux = 90")))
    assert info.value.problems == [info.value]
