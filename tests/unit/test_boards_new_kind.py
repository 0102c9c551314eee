"""A sensor kind added to the policy: the board loader and `civicedge boards` name what is missing
instead of a KeyError traceback, refuse deep sleep for a kind whose firmware app has no deep-sleep
cycle (a wake by a people input would put the time on the air) (QA: a third kind, `air`)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway.resources as resources
import hil.boards.cli as boards_cli
from gateway.resources import boards_dir
from hil.boards import InvalidValueError, UnknownFieldError, load_board
from hil.boards.kinds import KINDS, KindSpec
from hil.cli.main import main

AIR_POLICY = {
    "title": "Air-quality sensor",
    "window_s": 900,
    "fields": {
        "pm25": {"label": "PM2.5 (window mean)", "unit": "µg/m³", "personal": False, "valid_range": [0, 1000],
                 "source": "PM2.5 particle sensor", "release": "aggregate", "report": "win", "quantum": 1,
                 "retention_days": 730, "purpose": "air-quality monitoring"},
        "ppl": {"label": "People nearby (noisy count)", "unit": "count", "personal": True, "source": "PIR motion sensor",
                "release": "noisy_count", "report": "win", "release_every_s": 21600, "eps_per_release_milli": 500,
                "eps_per_day_milli": 2000, "k": 5, "refractory_s": 10, "retention_days": 365,
                "purpose": "relate exposure to footfall"},
    },
    "alarms": {},
    "config": [],
}

AIR_SPEC = KindSpec(io={"pm": ("adc",), "pir": ("in",)}, calibration={"pm": ("ug_per_volt",)}, app_ints={},
                    needs_schedule=False, people_io=("pir",), deep_sleep=False)

AIR_BOARD = """\
schema = 1
name = "air-esp32"
chip = "esp32"
kind = "air"

[io.pm]
mode = "adc"
pin = 32

[io.pir]
mode = "in"
pin = 27
pull = "down"

[links.uart]
id = 2
tx = 17
rx = 16

[links.ble]

[calibration.pm]
ug_per_volt = 100

[sleep]
mode = "none"
interval_s = 10

[watchdog]
timeout_ms = 30000

[app]
"""


@pytest.fixture
def air_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The shipped policy with an `air` kind, read by everything that reads the policy."""
    policy = json.loads(resources.policy_path().read_text())
    policy["kinds"]["air"] = AIR_POLICY
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    monkeypatch.setattr(resources, "policy_path", lambda: path)
    resources.load_policy.cache_clear()
    yield
    resources.load_policy.cache_clear()


@pytest.fixture
def boards_with_air(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A boards directory: the shipped boards and air-esp32.toml."""
    folder = tmp_path / "boards"
    shutil.copytree(boards_dir(), folder)
    (folder / "air-esp32.toml").write_text(AIR_BOARD)
    monkeypatch.setattr(boards_cli, "boards_dir", lambda: folder)
    return folder


@pytest.mark.usefixtures("air_policy")
def test_a_policy_kind_the_loader_does_not_know_names_the_board_file_and_kind(boards_with_air: Path) -> None:
    with pytest.raises(InvalidValueError) as info:
        load_board(boards_with_air / "air-esp32.toml")
    err = info.value
    assert err.field == "kind" and err.value == "air"
    assert str(err).startswith(f"{boards_with_air / 'air-esp32.toml'}: field 'kind' = 'air': kind 'air' is in "
                               "firmware/policy.json but hil/boards/kinds.py does not say what its boards need")


@pytest.mark.usefixtures("air_policy")
def test_boards_list_shows_the_other_boards_beside_the_invalid_one(boards_with_air: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # QA: a KeyError traceback, and no board listed at all
    assert main(["boards", "list"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"air-esp32: INVALID: {boards_with_air / 'air-esp32.toml'}: field 'kind' = 'air'")
    assert [line.split()[0] for line in lines[1:]] == ["bin-esp32c3", "streetlight-esp32"]
    assert main(["boards", "check", str(boards_with_air / "air-esp32.toml"), "streetlight-esp32"]) == 1
    out = capsys.readouterr().out
    assert "hil/boards/kinds.py" in out and "ok: streetlight-esp32" in out


@pytest.mark.usefixtures("air_policy")
def test_a_board_of_the_new_kind_loads_once_the_loader_knows_it(boards_with_air: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KINDS, "air", AIR_SPEC)
    board = load_board(boards_with_air / "air-esp32.toml")
    assert board.kind == "air" and board.to_device_config()["io"]["pir"]["pin"] == 27
    # a table where the kind allows no keys says so, not "(allowed here: )"
    bad = boards_with_air / "bad.toml"
    bad.write_text(AIR_BOARD + "foo = 1\n")
    with pytest.raises(UnknownFieldError) as info:
        load_board(bad)
    assert str(info.value).endswith("unknown field 'app.foo' (none allowed here)")
    # the links rule words the kind as a name: not "a air board"
    no_ble = boards_with_air / "no-ble.toml"
    no_ble.write_text(AIR_BOARD.replace("[links.ble]\n", ""))
    with pytest.raises(InvalidValueError) as ble:
        load_board(no_ble)
    assert ble.value.field == "links.ble" and "a air" not in str(ble.value)


@pytest.mark.usefixtures("air_policy")
def test_deep_sleep_with_a_people_wake_pin_is_refused_for_a_kind_without_a_deep_sleep_cycle(
        boards_with_air: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # QA: accepted, and the board would start its links at every motion wake
    monkeypatch.setitem(KINDS, "air", AIR_SPEC)
    deep = boards_with_air / "air-deep.toml"
    deep.write_text(AIR_BOARD.replace('mode = "none"', 'mode = "deep"\nwake_pins = ["pir"]'))
    with pytest.raises(InvalidValueError) as info:
        load_board(deep)
    assert info.value.field == "sleep.mode" and info.value.value == "deep"
    assert "the firmware's air app has no deep-sleep cycle" in str(info.value)
    assert "wake pins pir sense people" in str(info.value)


def test_a_deep_sleep_streetlight_is_refused_and_the_deep_sleep_bin_still_loads(tmp_path: Path) -> None:
    text = (boards_dir() / "streetlight-esp32.toml").read_text()
    assert 'mode = "none"' in text
    path = tmp_path / "sl-deep.toml"
    path.write_text(text.replace('mode = "none"', 'mode = "deep"\nwake_pins = ["pir"]'))
    with pytest.raises(InvalidValueError) as info:
        load_board(path)
    assert info.value.field == "sleep.mode" and "wake pins pir sense people" in str(info.value)
    timer_only = tmp_path / "sl-deep-timer.toml"
    timer_only.write_text(text.replace('mode = "none"', 'mode = "deep"'))
    with pytest.raises(InvalidValueError) as timer:
        load_board(timer_only)
    assert timer.value.field == "sleep.mode" and "sense people" not in str(timer.value)
    bin_board = load_board("bin-esp32c3")      # its app keeps the radio off at a lid wake
    assert bin_board.sleep.mode == "deep" and bin_board.sleep.wake_pins == ("lid", "tilt")

