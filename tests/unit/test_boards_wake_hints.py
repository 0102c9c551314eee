"""A wake pin that cannot wake the chip is told which GPIOs can, reserved ones left out, with a free-pin hint
like every other pin error (review LOW: NotWakePinError listed every RTC GPIO, the S3's USB pins 19/20
included, and named no free one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.resources import boards_dir
from hil.boards import NotWakePinError, load_board

BIN = (boards_dir() / "bin-esp32c3.toml").read_text()


def bin_variant(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bin.toml"
    path.write_text(text)
    return path


def test_a_c3_lid_off_the_rtc_pins_is_offered_the_free_ones(tmp_path: Path) -> None:
    assert BIN.count("pin = 3\n") == 1
    with pytest.raises(NotWakePinError) as info:
        load_board(bin_variant(tmp_path, BIN.replace("pin = 3\n", "pin = 10\n")))  # the lid (pull = "up")
    err = info.value
    assert err.wake_pins == [0, 1, 2, 3, 4, 5]
    # 0, 1 (temp, battery) and 4 (tilt) are taken; 3, which the lid left, is free again
    assert err.hint == "free GPIOs for a deep-sleep wake input with a pull resistor: 3, 5 (strapping pins, only " \
                       "with care: 2)"
    assert str(err).endswith(err.hint)


def test_s3_wake_pins_leave_out_the_usb_pins(tmp_path: Path) -> None:
    s3 = BIN.replace('chip = "esp32c3"', 'chip = "esp32s3"').replace("[recovery]\npin = 9", "[recovery]\npin = 0")
    s3 = s3.replace("pin = 0\n", "pin = 2\n", 1).replace("pin = 3\n", "pin = 38\n")  # temp to GPIO2, lid off RTC
    with pytest.raises(NotWakePinError) as info:
        load_board(bin_variant(tmp_path, s3))
    assert 19 not in info.value.wake_pins and 20 not in info.value.wake_pins
    offered = {int(p) for p in info.value.hint.split(": ")[1].split(" (")[0].split(", ")}
    assert offered and offered <= set(info.value.wake_pins) and not offered & {0, 1, 2, 4, 6, 7}
