"""A pin error names the free GPIOs that can do the job (QA LOW: a C3 board with trig on GPIO20 got
"not usable (UART0, the MicroPython console)" with no free-pin hint), and the C3's USB pins are
reserved like the S3's."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.resources import boards_dir
from hil.boards import CHIPS, InputOnlyPinError, NotAdcPinError, PinConflictError, ReservedPinError, load_board

STREETLIGHT = (boards_dir() / "streetlight-esp32.toml").read_text()
BIN = (boards_dir() / "bin-esp32c3.toml").read_text()


def variant(tmp_path: Path, base: str, old: str, new: str) -> Path:
    assert base.count(old) == 1, f"test setup: {old!r} must occur once"
    path = tmp_path / "variant.toml"
    path.write_text(base.replace(old, new))
    return path


def test_trig_on_the_c3_console_pin_names_free_outputs(tmp_path: Path) -> None:
    with pytest.raises(ReservedPinError) as info:
        load_board(variant(tmp_path, BIN, "pin = 6\n", "pin = 20\n"))
    err = info.value
    assert "UART0, the civicedge console" in err.reason
    # Not 0, 1, 3, 4, 7, 9 (the bin's other pins), 11-17 (flash), 18/19 (USB), 20/21 (console);
    # GPIO6 is free again once trig leaves it. Strapping pins come apart.
    assert err.hint == "free GPIOs for an output: 5, 6, 10 (strapping pins, only with care: 2, 8)"
    assert str(err).endswith(err.hint)


@pytest.mark.parametrize("pin", [18, 19])
def test_c3_usb_pins_are_reserved(tmp_path: Path, pin: int) -> None:
    with pytest.raises(ReservedPinError) as info:
        load_board(variant(tmp_path, BIN, "pin = 6\n", f"pin = {pin}\n"))
    assert "USB-Serial/JTAG" in info.value.reason and str(pin) not in info.value.hint.split(": ")[1]


def test_adc_hint_offers_only_free_adc_pins(tmp_path: Path) -> None:
    with pytest.raises(NotAdcPinError) as info:
        load_board(variant(tmp_path, STREETLIGHT, "pin = 34\n", "pin = 23\n"))  # light sensor off ADC
    free = info.value.hint
    assert free.startswith("free GPIOs for an ADC input: ") and "(strapping" in free
    listed = {int(p) for p in free.split(": ")[1].split(" (")[0].split(", ")}
    # not 27 (pir), 25 (lamp), 35 (lamp_current), 0 (the button); 34, which the light sensor left, is free
    assert listed == {4, 13, 14, 26, 32, 33, 34, 36, 37, 38, 39}
    assert listed <= CHIPS["esp32"].adc_pins


def test_output_hint_leaves_out_input_only_pins(tmp_path: Path) -> None:
    with pytest.raises(InputOnlyPinError) as info:
        load_board(variant(tmp_path, STREETLIGHT, "pin = 25\n", "pin = 36\n"))
    listed = {int(p) for p in info.value.hint.split(": ")[1].split(" (")[0].split(", ")}
    assert listed and not listed & CHIPS["esp32"].input_only and 25 in listed


def test_a_conflict_names_free_pins_too(tmp_path: Path) -> None:
    with pytest.raises(PinConflictError) as info:
        load_board(variant(tmp_path, STREETLIGHT, "pin = 27\n", "pin = 25\n"))
    # Reported at the lamp (a PWM output) that the PIR now shares; GPIO27, which the PIR left, is offered.
    listed = {int(p) for p in info.value.hint.split(": ")[1].split(" (")[0].split(", ")}
    assert info.value.hint.startswith("free GPIOs for an output: ") and 25 not in listed and 27 in listed
