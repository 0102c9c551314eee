"""Properties of the stimulus conversions (pure host code; hypothesis, scaled by CIVICEDGE_FULL)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.boards import load_board
from hil.sim.errors import StimulusError
from hil.sim.stimuli import BoardIo, parse_duration_ms, parse_fault, stimulus_op

EXAMPLES = 500 if os.environ.get("CIVICEDGE_FULL") == "1" else 60
BIN = BoardIo(load_board("bin-esp32c3").to_device_config())
LIGHT = BoardIo(load_board("streetlight-esp32").to_device_config())


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]))
def test_duration_units(n, unit):
    assert parse_duration_ms(f"{n}{unit[0]}") == n * unit[1]
    assert parse_fault(f"drop uart {n}{unit[0]}") == {"kind": "drop", "link": "uart", "ms": n * unit[1]}


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.floats(-20, 120), st.floats(-20, 120))
def test_thermistor_voltage_falls_as_temperature_rises(a, b):
    ua = stimulus_op(BIN, "temperature", a)["uv"]
    ub = stimulus_op(BIN, "temperature", b)["uv"]
    if a < b:
        assert ua >= ub
    assert 129084 <= ua <= 3014000


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 100), st.integers(0, 100))
def test_battery_and_light_are_monotonic(a, b):
    if a < b:
        assert stimulus_op(BIN, "battery", a)["uv"] < stimulus_op(BIN, "battery", b)["uv"]
        assert stimulus_op(LIGHT, "light", a)["uv"] < stimulus_op(LIGHT, "light", b)["uv"]


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text(max_size=20))
def test_garbage_is_a_stimulus_error_never_a_crash(text):
    for fn in (parse_duration_ms, parse_fault):
        try:
            fn(text)
        except StimulusError:
            pass


@pytest.mark.parametrize("line", ["drop", "drop uart", "corrupt 2", "corrupt x", "clock_skew", "reset now",
                                  "power_loss 5s", "ble_disconnect x"])
def test_bad_fault_lines(line):
    with pytest.raises(StimulusError):
        parse_fault(line)
