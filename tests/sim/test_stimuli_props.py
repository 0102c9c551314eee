"""Properties of the stimulus conversions (pure host code; hypothesis, scaled by CIVICEDGE_FULL)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.boards import load_board
from hil.sim.errors import StimulusError
from hil.sim.stimuli import BoardIo, load_stimuli, parse_duration_ms, parse_fault, stimulus_op

EXAMPLES = 500 if os.environ.get("CIVICEDGE_FULL") == "1" else 60
BIN = BoardIo(load_board("bin-esp32c3").to_device_config())
LIGHT = BoardIo(load_board("streetlight-esp32").to_device_config())


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]))
def test_duration_units(n, unit):
    assert parse_duration_ms(f"{n}{unit[0]}") == n * unit[1]
    assert parse_fault(f"drop uart {n}{unit[0]}") == {"kind": "drop", "link": "uart", "ms": n * unit[1]}


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.floats(-60, 1000), st.floats(-60, 1000))
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


@pytest.mark.parametrize(("io", "name", "value", "words"), [
    (BIN, "battery", 3700, "'battery' = 3700 is outside 0..100 % (state of charge"),     # millivolts, not %
    (BIN, "battery", -1, "outside 0..100 %"),
    (BIN, "temperature", 1500, "'temperature' = 1500 is outside -60..1000 °C (arctic cold .. a fire's flames)"),
    (BIN, "temperature", -80, "outside -60..1000 °C"),
    (BIN, "temperature", "hot", "needs a number"),
    (BIN, "distance", "far", "takes millimetres or \"none\" (no echo), got 'far'"),
    (BIN, "distance", 6000, 'distance = "none" for no echo'),
    (BIN, "distance", -70, "'distance' = -70 is outside 0..5145 mm"),
    (BIN, "distance", 6000, "after bin-esp32c3's 30000 µs timeout"),
    (LIGHT, "light", -4, "'light' = -4 is outside 0..150000 lux"),
    (LIGHT, "light", 1e9, "outside 0..150000 lux"),
    (LIGHT, "lamp_current", -5, "'lamp_current' = -5 is outside 0..3100 mA"),
    (BIN, "pin:99", 1, "defines no pin on GPIO 99 (its pins: 0 (temp), 1 (battery), 3 (lid), 4 (tilt), 6 (trig), "
                       "7 (echo), 9 (recovery))"),
    (LIGHT, "pin:27", 5, "takes a level, 0 or 1"),
    (BIN, "adc:99", 5, "defines no ADC pin on GPIO 99 (its ADC pins: 0 (temp), 1 (battery))"),
    (BIN, "adc:3", 5, "defines no ADC pin on GPIO 3"),   # the lid's pin is digital
    (BIN, "adc:0", -1, "outside 0..3300000 µV"),
    (LIGHT, "pri", 1, "unknown stimulus 'pri' (did you mean 'pir'? stimuli: pir, light,"),
])
def test_values_outside_a_stimulus_range_or_pins_the_board_lacks_are_refused(io, name, value, words):
    with pytest.raises(StimulusError) as info:
        stimulus_op(io, name, value)
    assert words in str(info.value)


@pytest.mark.parametrize(("io", "name", "value"), [
    (BIN, "battery", 0), (BIN, "battery", 100), (BIN, "temperature", 85), (BIN, "temperature", 120),
    (BIN, "temperature", -20), (BIN, "distance", 0), (BIN, "distance", 5000), (LIGHT, "light", 100_000),
    (LIGHT, "lamp_current", 260), (LIGHT, "pin:27", 1), (LIGHT, "pin:0", 0), (LIGHT, "adc:34", 1_500_000),
])
def test_values_within_range_are_taken(io, name, value):
    assert stimulus_op(io, name, value)["kind"] in ("adc", "echo", "pin")


def test_temperature_beyond_the_thermistor_table_saturates_at_its_ends():
    # bin-esp32c3's table covers -20..120 °C; a Nordic winter and a fire are real values, read as the
    # table's ends, as the real voltage divider's reading saturates.
    assert stimulus_op(BIN, "temperature", -25)["uv"] == stimulus_op(BIN, "temperature", -20)["uv"]
    assert stimulus_op(BIN, "temperature", -60)["uv"] == stimulus_op(BIN, "temperature", -20)["uv"]
    assert stimulus_op(BIN, "temperature", 400)["uv"] == stimulus_op(BIN, "temperature", 120)["uv"]
    assert stimulus_op(BIN, "temperature", 1000)["uv"] == stimulus_op(BIN, "temperature", 120)["uv"]
    assert stimulus_op(BIN, "temperature", 119)["uv"] > stimulus_op(BIN, "temperature", 120)["uv"]


def test_distance_none_is_an_echo_longer_than_the_timeout():
    op = stimulus_op(BIN, "distance", "none")
    assert op["kind"] == "echo" and op["us"] > 30_000  # bin-esp32c3's [calibration.fill] timeout_us
    assert stimulus_op(BIN, "distance", 5000)["us"] <= 30_000


def test_light_saturates_at_the_supply_voltage():
    # streetlight-esp32: 300 lux per volt, so 990 lux is 3.3 V; brighter light holds the pin there.
    assert stimulus_op(LIGHT, "light", 500)["uv"] == 1_666_666
    assert stimulus_op(LIGHT, "light", 990)["uv"] == 3_300_000
    assert stimulus_op(LIGHT, "light", 1000)["uv"] == 3_300_000
    assert stimulus_op(LIGHT, "light", 150_000)["uv"] == 3_300_000


@pytest.mark.parametrize(("io", "line", "words"), [
    (BIN, "drop uart 1m", "board bin-esp32c3 has no uart link (its links: ble)"),
    (BIN, "corrupt 0.1", "has no uart link"),
    (LIGHT, "drop ble 1m", None), (LIGHT, "corrupt uart 0.1", None), (BIN, "drop ble 1m", None),
    (BIN, "drop 1m", None), (BIN, "ble_disconnect", None),
])
def test_link_faults_need_the_link(io, line, words):
    doc = f'[[at]]\ntime = "+1m"\nfault = "{line}"\n'
    if words is None:
        assert len(load_stimuli(doc, io, 0).faults) == 1
    else:
        with pytest.raises(StimulusError) as info:
            load_stimuli(doc, io, 0)
        assert words in str(info.value)
