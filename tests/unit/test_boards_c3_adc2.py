"""The ESP32-C3's ADC2 (GPIO5) is unreliable (Espressif's C3 errata; ESP-IDF v5 refuses it in oneshot mode
unless forced): an ADC hint lists it last, as a last resort, never among the plain choices (review LOW: the
hint offered GPIO5 like any ADC1 pin)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.resources import boards_dir
from hil.boards import CHIPS, NotAdcPinError, load_board

BIN = (boards_dir() / "bin-esp32c3.toml").read_text()


def test_a_c3_adc_hint_lists_adc2_last(tmp_path: Path) -> None:
    assert BIN.count("pin = 0\n") == 1
    path = tmp_path / "bin.toml"
    path.write_text(BIN.replace("pin = 0\n", "pin = 10\n"))  # the thermistor off the ADC
    with pytest.raises(NotAdcPinError) as info:
        load_board(path)
    # 1, 3, 4 are the battery, lid and tilt; 0, which the thermistor left, is free again
    assert info.value.hint == ("free GPIOs for an ADC input: 0 (strapping pins, only with care: 2); last resort: 5 "
                               "(ADC2 on esp32c3, unreliable per Espressif's errata)")
    assert 5 in info.value.adc_pins  # accepted all the same: a board may need it


def test_only_the_c3_marks_adc_pins_unreliable() -> None:
    assert CHIPS["esp32c3"].adc_unreliable == {5}
    assert "last resort" not in CHIPS["esp32"].free_hint("adc", set())
    assert "last resort" not in CHIPS["esp32c3"].free_hint("in", set())
