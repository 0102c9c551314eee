"""Fault lines with a word where the link goes (`drop uarts 10s`, `corrupt ble 0.01`) are named as a bad
link, not as a missing duration or rate; unknown fault kinds get a did-you-mean; inline stimuli text
nested too deeply is a StimulusError, as a file's is. Each case failed before (a misleading message, or
a RecursionError)."""

from __future__ import annotations

import pytest

from gateway.small_files import MAX_DEPTH
from hil.sim.errors import StimulusError
from hil.sim.stimuli import BoardIo, load_stimuli, parse_fault

LINKS_DROP = "links: uart, ble, all"


@pytest.mark.parametrize("line, says", [
    ("drop uarts 10s", f"unknown link 'uarts' for drop (did you mean 'uart'? {LINKS_DROP}): 'drop uarts 10s'"),
    ("drop uarts", f"unknown link 'uarts' for drop (did you mean 'uart'? {LINKS_DROP}): 'drop uarts'"),
    ("drop BLE 1m", f"unknown link 'BLE' for drop (did you mean 'ble'? {LINKS_DROP})"),
    ("drop wifi 1m", f"unknown link 'wifi' for drop ({LINKS_DROP})"),
    ("drop ten", "drop: 'ten' is neither a link (uart, ble, all) nor a duration (e.g. 60s): 'drop ten'"),
    ("corrupt uarts 0.01", "unknown link 'uarts' for corrupt (did you mean 'uart'? links: uart, all)"),
    ("corrupt banana", "corrupt: 'banana' is neither a link (uart, all) nor a rate 0..1 (e.g. 0.01)"),
])
def test_a_word_that_is_no_link_of_the_fault_is_named_as_a_link(line: str, says: str) -> None:
    with pytest.raises(StimulusError) as info:
        parse_fault(line)
    assert says in str(info.value), str(info.value)
    assert "needs a duration" not in str(info.value) and "needs a rate" not in str(info.value)
    assert info.value.details["value"] == line and info.value.details["link"] == line.split()[1]


@pytest.mark.parametrize("line", ["corrupt ble 0.01", "corrupt ble 0.01 for 60s", "corrupt BLE 0.5"])
def test_corrupt_on_ble_says_it_takes_uart_or_all_and_why(line: str) -> None:
    with pytest.raises(StimulusError) as info:
        parse_fault(line)
    msg = str(info.value)
    assert msg.startswith("corrupt acts on UART bytes only (link uart or all), not ble: BLE's link layer checks "
                          "every packet's CRC"), msg
    assert "use drop ble or ble_disconnect" in msg and "needs a rate" not in msg


@pytest.mark.parametrize("line, says", [
    ("drop", "drop needs one duration: drop [uart|ble|all] DURATION"),
    ("drop uart", "drop needs one duration"),
    ("drop 10s 20s", "drop needs one duration"),
    ("drop uart soon", "not a duration: 'soon'"),
    ("corrupt uart", "corrupt needs a rate 0..1"),
    ("corrupt 2", "corrupt rate must be within 0..1"),
    ("clock_skew banana", "clock_skew needs +/-DURATION (e.g. +30s, -2m), got 'banana': 'clock_skew banana'"),
    ("resett", "unknown fault 'resett' (did you mean 'reset'? one of drop, corrupt, reset,"),
    ("ble_disconect", "did you mean 'ble_disconnect'?"),
    ("explode", "unknown fault 'explode' (one of drop,"),
])
def test_other_bad_lines_keep_specific_messages(line: str, says: str) -> None:
    with pytest.raises(StimulusError) as info:
        parse_fault(line)
    assert says in str(info.value), str(info.value)


@pytest.mark.parametrize("line, fault", [
    ("drop 60s", {"kind": "drop", "link": "all", "ms": 60_000}),
    ("drop ble 1m", {"kind": "drop", "link": "ble", "ms": 60_000}),
    ("drop uart 10m", {"kind": "drop", "link": "uart", "ms": 600_000}),
    ("corrupt 0.1", {"kind": "corrupt", "link": "all", "rate": 0.1}),
    ("corrupt uart 0.01 for 60s", {"kind": "corrupt", "link": "uart", "rate": 0.01, "ms": 60_000}),
    ("clock_skew -2m", {"kind": "clock_skew", "ms": -120_000}),
])
def test_valid_lines_parse_as_before(line: str, fault: dict[str, object]) -> None:
    assert parse_fault(line) == fault


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 50_000])
def test_inline_stimuli_text_nested_too_deeply_is_a_stimulus_error(depth: int) -> None:
    text = "[set]\nlight = 5\n[[at]]\ntime = \"+1m\"\nx = " + "[" * depth + "]" * depth + "\n"
    with pytest.raises(StimulusError, match=r"^stimuli text is not valid TOML: nested too deeply") as info:
        load_stimuli(text, BoardIo({"name": "b"}), 0)
    assert len(info.value.details["value"]) < 100  # not the megabyte of brackets


def test_inline_stimuli_text_within_the_depth_still_loads() -> None:
    io = BoardIo({"name": "b", "io": {"pir": {"pin": 27, "mode": "in"}}})
    plan = load_stimuli('[[at]]\ntime = "+1m"\npir = 1\nfault = ["drop 1m"]\n', io, 0)
    assert plan.stimuli == [{"at": 60_000, "kind": "pin", "pin": 27, "level": 1}]
    assert plan.faults == [{"at": 60_000, "kind": "drop", "link": "all", "ms": 60_000}]
