"""ESP32-S3 board definitions (QA MEDIUM: `chip = "esp32s3"` was an unknown chip with no hint what to
do), and every chip the loader knows is known to the flasher and the simulator too."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.resources import boards_dir
from hil.boards import (
    CHIPS,
    InputOnlyPinError,
    NotAdcPinError,
    NotWakePinError,
    PinNotOnChipError,
    ReservedPinError,
    UnknownChipError,
    load_board,
)
from hil.field import chips as field_chips
from hil.field.board_facts import chip_from_machine
from hil.sim.board import _UART_IDS

STREETLIGHT = (boards_dir() / "streetlight-esp32.toml").read_text()
BIN = (boards_dir() / "bin-esp32c3.toml").read_text()

# The shipped streetlight moved to an ESP32-S3-DevKitC-1: its ESP32 pins 27, 34, 35 are flash/PSRAM
# pins on the S3 and GPIO25 does not exist there.
S3_PINS = {'chip = "esp32"': 'chip = "esp32s3"', 'name = "streetlight-esp32"': 'name = "sl-s3"',
           "pin = 27\n": "pin = 4\n", "pin = 34\n": "pin = 1\n", "pin = 25\n": "pin = 5\n", "pin = 35\n": "pin = 2\n"}


def s3_streetlight(tmp_path: Path, **changes: str) -> Path:
    """The streetlight on an S3, with further ``old=new`` text changes (each old text must occur once)."""
    text = STREETLIGHT
    for old, new in [*S3_PINS.items(), *changes.items()]:
        assert text.count(old) == 1, f"test setup: {old!r} must occur once"
        text = text.replace(old, new)
    path = tmp_path / "sl-s3.toml"
    path.write_text(text)
    return path


def test_a_streetlight_on_an_s3_loads(tmp_path: Path) -> None:
    board = load_board(s3_streetlight(tmp_path))
    assert (board.chip, board.name) == ("esp32s3", "sl-s3")
    assert {r: p.pin for r, p in board.io.items()} == {"pir": 4, "light": 1, "lamp": 5, "lamp_current": 2}
    assert board.to_device_config()["chip"] == "esp32s3"


@pytest.mark.parametrize(("pin", "error", "says"), [
    (22, PinNotOnChipError, "has no GPIO22"),            # 22-25 do not exist
    (49, PinNotOnChipError, "has no GPIO49"),
    (26, ReservedPinError, "SPI flash"),                  # 26-32: flash / quad PSRAM
    (32, ReservedPinError, "SPI flash"),
    (33, ReservedPinError, "octal"),                      # 33-37: octal PSRAM on N8R8 modules
    (37, ReservedPinError, "octal"),
    (19, ReservedPinError, "USB D-"),
    (20, ReservedPinError, "USB D+"),
    (43, ReservedPinError, "console"),                    # UART0 TX / RX
    (44, ReservedPinError, "console"),
])
def test_s3_pins_that_a_pir_cannot_use(tmp_path: Path, pin: int, error: type[Exception], says: str) -> None:
    with pytest.raises(error) as info:
        load_board(s3_streetlight(tmp_path, **{"pin = 4\n": f"pin = {pin}\n"}))
    assert says in str(info.value)


def test_s3_adc_pins_are_gpio1_to_20(tmp_path: Path) -> None:
    assert load_board(s3_streetlight(tmp_path, **{"pin = 1\n": "pin = 18\n"})).io["light"].pin == 18  # ADC2_CH7
    with pytest.raises(NotAdcPinError) as info:
        load_board(s3_streetlight(tmp_path, **{"pin = 1\n": "pin = 21\n"}))
    assert info.value.adc_pins == [*range(1, 19)]  # 19/20 are ADC2 too, but the USB port


def test_s3_has_no_input_only_pins_and_wakes_on_rtc_gpios(tmp_path: Path) -> None:
    # A lamp PWM on GPIO46 (ESP32: GPIO34-39 cannot drive an output) is fine on an S3.
    assert load_board(s3_streetlight(tmp_path, **{"pin = 5\n": "pin = 46\n"})).io["lamp"].pin == 46
    assert CHIPS["esp32s3"].input_only == frozenset()
    # A bin on an S3: its lid wakes it from GPIO21 (the last RTC GPIO), not from GPIO38.
    bin_s3 = BIN.replace('chip = "esp32c3"', 'chip = "esp32s3"').replace("pin = 0\n", "pin = 2\n", 1)
    bin_s3 = bin_s3.replace("[recovery]\npin = 9", "[recovery]\npin = 0")
    path = tmp_path / "bin-s3.toml"
    path.write_text(bin_s3.replace("pin = 3\n", "pin = 21\n"))
    assert load_board(path).io["lid"].pin == 21
    path.write_text(bin_s3.replace("pin = 3\n", "pin = 38\n"))
    with pytest.raises(NotWakePinError) as info:
        load_board(path)
    assert info.value.wake_pins == [*range(0, 19), 21]  # RTC GPIO0-21 but the USB pins 19/20 (reserved)


def test_s3_data_uarts_are_1_and_2(tmp_path: Path) -> None:
    assert load_board(s3_streetlight(tmp_path)).uart is not None
    with pytest.raises(Exception, match="data UARTs are \\[1, 2\\]"):
        load_board(s3_streetlight(tmp_path, **{"id = 2": "id = 0"}))


def test_unknown_chip_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "c6.toml"
    path.write_text(STREETLIGHT.replace('chip = "esp32"', 'chip = "esp32c6"'))
    with pytest.raises(UnknownChipError) as info:
        load_board(path)
    text = str(info.value)
    assert "known: esp32, esp32c3, esp32s3" in text
    assert "hil/boards/chips.py" in text and "Adding a chip" in text
    path.write_text(STREETLIGHT.replace('chip = "esp32"', 'chip = "ESP32-S3"'))
    with pytest.raises(UnknownChipError, match="write chip = 'esp32s3'"):
        load_board(path)


@pytest.mark.parametrize("chip", sorted(CHIPS))
def test_every_board_chip_is_known_to_the_flasher_and_the_simulator(chip: str) -> None:
    spec = CHIPS[chip]
    profile = field_chips.chip_profile(chip)  # esptool name, image offset and image chip id
    assert profile.name == chip
    assert chip_from_machine(f"Generic module with {profile.esptool_name}") == chip
    assert chip_from_machine(f"civicedge virtual board with {chip.upper()}") == chip
    assert set(_UART_IDS[chip]) == {0, *spec.uart_ids}  # the virtual board has the chip's UARTs
    console_tx, console_rx = spec.console_pins
    assert {console_tx, console_rx} <= spec.gpios and not {console_tx, console_rx} & set(spec.reserved)
    assert spec.adc_pins <= spec.gpios and spec.wake_capable <= spec.gpios and set(spec.reserved) <= spec.gpios


def test_s3_flash_facts() -> None:
    profile = field_chips.chip_profile("esp32s3")
    assert (profile.esptool_name, profile.image_offset, profile.image_chip_id) == ("ESP32-S3", 0x0, 9)


def test_every_chip_is_in_the_input_only_check(tmp_path: Path) -> None:
    """ESP32 GPIO34-39 stay input-only: the S3 table did not change the others."""
    with pytest.raises(InputOnlyPinError):
        load_board(_write(tmp_path, STREETLIGHT.replace("pin = 25\n", "pin = 36\n")))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "b.toml"
    path.write_text(text)
    return path
