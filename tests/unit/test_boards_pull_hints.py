"""A free-pin hint for an input read with an internal pull (the recovery pin, pull = "up"/"down") never
offers pins without pull resistors (review LOW: the ESP32 hint offered GPIO34-39, which the loader then
refuses for exactly that use)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.resources import boards_dir
from hil.boards import CHIPS, InvalidValueError, PinError, load_board

STREETLIGHT = (boards_dir() / "streetlight-esp32.toml").read_text()
NO_PULL = CHIPS["esp32"].no_pull  # GPIO34-39


def variant(tmp_path: Path, old: str, new: str) -> Path:
    assert STREETLIGHT.count(old) == 1, f"test setup: {old!r} must occur once"
    path = tmp_path / "variant.toml"
    path.write_text(STREETLIGHT.replace(old, new))
    return path


def listed(hint: str) -> set[int]:
    assert hint.startswith("free GPIOs for an input with a pull resistor: "), hint
    return {int(p) for p in hint.split(": ")[1].split(" (")[0].split(", ")}


@pytest.mark.parametrize(("old", "new"), [
    ("pin = 0        # BOOT", "pin = 6        # BOOT"),  # the recovery pin on the SPI flash
    ("pin = 27\n", "pin = 7\n"),  # the PIR (pull = "down") on the SPI flash
    ("pin = 0        # BOOT", "pin = 27       # BOOT"),  # the PIR (checked after it) on the recovery pin
])
def test_a_pulled_input_is_offered_only_pins_with_pulls(tmp_path: Path, old: str, new: str) -> None:
    with pytest.raises(PinError) as info:
        load_board(variant(tmp_path, old, new))
    pins = listed(info.value.hint)
    assert pins and not pins & NO_PULL and pins <= CHIPS["esp32"].usable("in")


@pytest.mark.parametrize(("old", "new", "field"), [
    ("pin = 0        # BOOT", "pin = 36       # BOOT", "recovery.pin"),
    ("pin = 27\n", "pin = 36\n", "io.pir.pull"),
])
def test_a_pull_on_a_pin_without_one_names_pins_with_pulls(tmp_path: Path, old: str, new: str, field: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        load_board(variant(tmp_path, old, new))
    assert info.value.field == field and "no internal pull resistor" in info.value.reason
    pins = listed(info.value.reason[info.value.reason.index("free GPIOs"):].rstrip(")"))
    assert pins and not pins & NO_PULL and 36 not in pins


def test_an_input_without_pull_may_still_be_offered_input_only_pins(tmp_path: Path) -> None:
    path = variant(tmp_path, 'pin = 27\npull = "down"', 'pin = 7\npull = "none"')
    with pytest.raises(PinError) as info:
        load_board(path)
    assert info.value.hint.startswith("free GPIOs for an input: ") and "36" in info.value.hint
