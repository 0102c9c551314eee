"""A misspelt required key is named with the missing one (QA LOW: `tolerence_pct` for
`calibration.lamp.tolerance_pct` said only "missing required field", the required-key check
stopping before the unknown-key check that would have named the typo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.resources import boards_dir
from hil.boards import BoardError, MissingFieldError, load_board
from hil.cli.main import main

STREETLIGHT = (boards_dir() / "streetlight-esp32.toml").read_text()
BIN = (boards_dir() / "bin-esp32c3.toml").read_text()


def edited(tmp_path: Path, base: str, *changes: tuple[str, str]) -> Path:
    text = base
    for old, new in changes:
        assert text.count(old) == 1, f"test setup: {old!r} must occur once"
        text = text.replace(old, new)
    path = tmp_path / "typo.toml"
    path.write_text(text)
    return path


def missing(exc: BoardError) -> dict[str, str | None]:
    return {p.field: p.found for p in exc.problems if isinstance(p, MissingFieldError)}


def test_boards_check_names_the_misspelt_calibration_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = edited(tmp_path, STREETLIGHT, ("tolerance_pct = 30", "tolerence_pct = 30"))
    assert main(["boards", "check", str(path)]) == 1
    err = capsys.readouterr().out  # boards check reports on stdout
    assert ("missing required field 'calibration.lamp.tolerance_pct' (found 'calibration.lamp.tolerence_pct': "
            "misspelt?)") in err, err


@pytest.mark.parametrize("base, old, new, field, found", [
    (STREETLIGHT, "[io.lamp_current]", "[io.lamp_curent]", "io.lamp_current", "io.lamp_curent"),
    (STREETLIGHT, "on_lux = 30", "onlux = 30", "app.on_lux", "app.onlux"),
    (STREETLIGHT, "timeout_ms", "timout_ms", "watchdog.timeout_ms", "watchdog.timout_ms"),
    (BIN, "divider_num", "divisor_num", "calibration.battery.divider_num", "calibration.battery.divisor_num"),
])
def test_a_missing_required_key_names_its_likely_misspelling(tmp_path: Path, base: str, old: str, new: str,
                                                               field: str, found: str) -> None:
    with pytest.raises(BoardError) as caught:
        load_board(edited(tmp_path, base, (old, new)))
    assert missing(caught.value) == {field: found}


def test_a_present_valid_key_is_never_called_a_misspelling(tmp_path: Path) -> None:
    # divider_den is a valid key as close to divider_num as a typo: only keys the schema does not know
    # are suggested. A key simply left out gets no suggestion.
    path = edited(tmp_path, BIN, ("divider_num", "# divider_num"))
    with pytest.raises(BoardError) as caught:
        load_board(path)
    assert missing(caught.value) == {"calibration.battery.divider_num": None}
    assert "misspelt" not in str(caught.value)
