"""Plausible value ranges: the policy's ``valid_range`` per non-personal field.

A faulty sensor (or a device with a valid key gone wrong) sends fill = 250 %, tilt = 7 or
temp = 9000 °C. The gate drops such a value from the report and keeps the rest (the report is
authentic: refusing it would lose it, acknowledged, on the device); ingest counts it and warns at
most once a minute per device and field. A range on a people-related count is refused at load.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import KEYS
from helpers import WINDOW_T0, fill_release, mot_release, report_frame
from test_verify_ingest import Collector, _settle

from gateway.errors import ConfigError, RejectedReport
from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, PolicyGate, Verifier
from gateway.pipeline.verify import OutOfRange
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportStore
from hil.sim.stimuli import LIGHT_MAX_LUX, TEMPERATURE_C

HOUR0 = WINDOW_T0 - WINDOW_T0 % 3600


def shipped_ranges() -> list[tuple[str, str, int, int]]:
    """(kind, field, min, max) of every valid_range in the shipped policy."""
    return [(kind, name, *spec["valid_range"]) for kind, kspec in load_policy()["kinds"].items()
            for name, spec in kspec["fields"].items() if "valid_range" in spec]


# A window field -> another field of its window, in range (it must be kept when the first is dropped).
BESIDE = {"lux": {"lamp": 0}, "lvl": {"lamp": 0}, "lamp": {"lvl": 60}, "temp": {"bat": 80}, "tilt": {"bat": 80},
          "bat": {"tilt": 0}}


def frame_with(device: str, seq: int, name: str, value: int) -> bytes:
    """An authentic report of ``device`` carrying ``name`` = ``value`` in the report type the policy
    sends it in (wh hourly and fill in its 6-hour release, alone; the others in a window, with
    :data:`BESIDE`)."""
    kind = "streetlight" if device.startswith("sl") else "bin"
    if name == "wh":
        return report_frame(device, seq, KEYS[device], kind, t="hour", w=HOUR0, l=3600, m={"wh": value})
    if name == "fill":
        return report_frame(device, seq, KEYS[device], kind, **fill_release(seq, value))
    return report_frame(device, seq, KEYS[device], kind, m={name: value, **BESIDE[name]})


def test_the_shipped_policy_bounds_every_non_personal_field_and_no_personal_one() -> None:
    """Every non-personal field has a range (a sensor of any of them can fail); a noisy count none."""
    for kind, kspec in load_policy()["kinds"].items():
        for name, spec in kspec["fields"].items():
            assert ("valid_range" in spec) == (spec["release"] != "noisy_count"), (kind, name)
    assert PolicyGate(load_policy()).ranges == {
        "streetlight": (("lux", 0, 150_000), ("lvl", 0, 100), ("lamp", 0, 1), ("wh", 0, 1000)),
        "bin": (("fill", 0, 100), ("temp", -60, 1000), ("tilt", 0, 1), ("bat", 0, 100))}


def test_the_temperature_range_keeps_a_burning_bin_and_light_range_direct_sunlight() -> None:
    """The simulator's stimuli span what a sensor can meet (arctic cold .. a fire's flames, darkness ..
    direct sunlight): all of it is in range, so a fire's temperature is never dropped, whatever sensor
    a bin carries (this board's thermistor saturates at 120 °C)."""
    ranges = {(k, f): (lo, hi) for k, f, lo, hi in shipped_ranges()}
    lo, hi = ranges[("bin", "temp")]
    assert lo <= TEMPERATURE_C[0] and TEMPERATURE_C[1] <= hi
    assert ranges[("streetlight", "lux")] == (0, LIGHT_MAX_LUX)


@pytest.mark.parametrize(("kind", "name", "low", "high"), shipped_ranges())
def test_boundary_values_are_kept_and_one_beyond_is_dropped(registry: Registry, kind: str, name: str, low: int,
                                                           high: int) -> None:
    """Both bounds are in range; one unit beyond either is dropped (off the quantum too: the value is
    judged as sent, before the gateway rounds it), the rest of the report kept."""
    verifier = Verifier(registry, load_policy())
    device = "sl-1" if kind == "streetlight" else "bin-1"
    for seq, value in enumerate((low, high), start=1):
        v = verifier.verify(frame_with(device, seq, name, value), link="serial:t", now=0)
        assert v.out_of_range == () and v.record.m[name] == value
    for seq, value in enumerate((low - 1, high + 1), start=3):
        v = verifier.verify(frame_with(device, seq, name, value), link="serial:t", now=0)
        assert v.out_of_range == (OutOfRange(name, value, low, high),)
        assert v.record.m == BESIDE.get(name, {})


def test_out_of_range_values_are_dropped_and_the_rest_kept(registry: Registry) -> None:
    verifier = Verifier(registry, load_policy())
    v = verifier.verify(report_frame("bin-1", 1, KEYS["bin-1"], m={"temp": 9000, "tilt": 7, "bat": 80}),
                        link="serial:t", now=0)
    assert v.record.m == {"bat": 80}
    assert v.out_of_range == (OutOfRange("temp", 9000, -60, 1000), OutOfRange("tilt", 7, 0, 1))
    v = verifier.verify(report_frame("bin-1", 2, KEYS["bin-1"], m={"bat": -3, "temp": 12}), link="serial:t", now=0)
    assert v.record.m == {"temp": 12} and v.out_of_range == (OutOfRange("bat", -3, 0, 100),)
    v = verifier.verify(report_frame("sl-1", 1, KEYS["sl-1"], "streetlight", m={"lamp": 2, "lvl": 60, "lux": 20}),
                        link="serial:t", now=0)
    assert v.record.m == {"lvl": 60, "lux": 20} and [o.field for o in v.out_of_range] == ["lamp"]


def test_a_fire_alarm_is_kept_even_with_an_implausible_temperature(registry: Registry) -> None:
    """The alarm code is what sends the crews; a temperature in range stays with it, an implausible
    one is dropped and the alarm still stored."""
    verifier = Verifier(registry, load_policy())
    alarm = {"t": "alarm", "w": WINDOW_T0, "l": 60, "a": ["fire"]}
    v = verifier.verify(report_frame("bin-1", 1, KEYS["bin-1"], **alarm, m={"temp": 850}), link="serial:t", now=0)
    assert (v.record.a, v.record.m, v.out_of_range) == (["fire"], {"temp": 850}, ())
    v = verifier.verify(report_frame("bin-1", 2, KEYS["bin-1"], **alarm, m={"temp": 9000}), link="serial:t", now=0)
    assert (v.record.type, v.record.a, v.record.m) == ("alarm", ["fire"], {})
    assert v.out_of_range == (OutOfRange("temp", 9000, -60, 1000),)


def test_a_value_in_range_is_rounded_after_the_check(registry: Registry) -> None:
    """A board with a finer quantum: its value is judged as sent, then rounded to the gateway's quantum
    (bounds on the quantum keep a value in range in range)."""
    verifier = Verifier(registry, load_policy())
    v = verifier.verify(report_frame("bin-1", 1, KEYS["bin-1"], m={"bat": 99, "temp": 12}), link="serial:t", now=0)
    assert v.record.m == {"bat": 100, "temp": 12} and v.coarsened == ("bat",) and v.out_of_range == ()
    v = verifier.verify(report_frame("bin-1", 2, KEYS["bin-1"], m={"bat": 101, "temp": 12}), link="serial:t", now=0)
    assert v.record.m == {"temp": 12} and v.coarsened == () and v.out_of_range == (OutOfRange("bat", 101, 0, 100),)


def test_values_of_the_wrong_type_are_left_to_the_body_checks(registry: Registry) -> None:
    """Not an integer: refused as malformed (``body``), as without a range, not dropped."""
    gate = PolicyGate(load_policy())
    body: dict[str, Any] = {"t": "win", "w": WINDOW_T0, "l": 900, "m": {"temp": "hot", "tilt": True, "bat": 800}}
    assert gate.drop_out_of_range(body, "bin") == (OutOfRange("bat", 800, 0, 100),)
    assert body["m"] == {"temp": "hot", "tilt": True}
    verifier = Verifier(registry, load_policy())
    for seq, m in enumerate(({"temp": "hot", "bat": 80}, {"tilt": 1.5}, {"tilt": True, "bat": 80}), start=1):
        with pytest.raises(RejectedReport) as info:
            verifier.verify(report_frame("bin-1", seq, KEYS["bin-1"], m=m), link="serial:t", now=0)
        assert info.value.reason == "body" and "measurements must be integers" in str(info.value)


@pytest.mark.parametrize("value", [2**53, 2**60, 2**64 - 1, -(2**53), -(2**63)])
def test_an_integer_beyond_the_wire_range_on_a_ranged_field_is_dropped_and_the_rest_kept(
        registry: Registry, value: int) -> None:
    """Fails before: an integer of 2**53 or more (msgpack carries up to 64 bits) on a field with a range
    refused the whole authentic report as ``body``: acknowledged, so lost on the device with its other
    values. It is an implausible value like any other out of range."""
    verifier = Verifier(registry, load_policy())
    v = verifier.verify(report_frame("bin-1", 1, KEYS["bin-1"], m={"temp": value, "bat": 80}), link="serial:t", now=0)
    assert v.record.m == {"bat": 80} and v.out_of_range == (OutOfRange("temp", value, -60, 1000),)


def test_an_integer_beyond_the_wire_range_on_a_field_without_a_range_is_still_refused(registry: Registry) -> None:
    """A field without a range (the people counts) has no plausible bound to drop it by: such a report is
    malformed (``body``), as before."""
    verifier = Verifier(registry, load_policy())
    with pytest.raises(RejectedReport) as info:
        verifier.verify(report_frame("sl-1", 1, KEYS["sl-1"], "streetlight", **mot_release(1, 2**53)),
                        link="serial:t", now=0)
    assert info.value.reason == "body" and "measurements must be integers" in str(info.value)


def with_range(kind: str, name: str, value: Any) -> dict[str, Any]:
    policy = copy.deepcopy(load_policy())
    policy["kinds"][kind]["fields"][name]["valid_range"] = value
    return policy


@pytest.mark.parametrize(("kind", "name", "value", "message"), [
    ("streetlight", "mot", [0, 1000], "kinds.streetlight.fields.mot.valid_range: a people-related field (personal or "
                                      "noisy_count) takes no valid_range"),
    ("bin", "lid", [5, 100], "kinds.bin.fields.lid.valid_range: a people-related field"),
    ("bin", "temp", [125, -40], "kinds.bin.fields.temp.valid_range = [125, -40]: min is above max"),
    ("bin", "temp", [0], "kinds.bin.fields.temp.valid_range must be [min, max], two whole numbers in the field's "
                         "unit, not [0]"),
    ("bin", "temp", [0, 12.5], "must be [min, max], two whole numbers in the field's unit, not [0, 12.5]"),
    ("bin", "tilt", [False, True], "must be [min, max], two whole numbers"),
    ("bin", "temp", "-40..125", "not '-40..125'"),
    ("bin", "temp", {"min": 0, "max": 1}, "must be [min, max]"),
    ("bin", "bat", [0, 95], "kinds.bin.fields.bat.valid_range = [0, 95]: the bounds must be multiples of the "
                            "field's quantum 10"),
    ("streetlight", "lux", [5, 1000], "the bounds must be multiples of the field's quantum 10"),
])
def test_a_bad_valid_range_is_refused_at_load(kind: str, name: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        PolicyGate(with_range(kind, name, value))
    assert message in str(info.value)
    assert info.value.key == "kinds.%s.fields.%s.valid_range" % (kind, name)


def test_a_range_on_a_field_marked_personal_is_refused_whatever_its_release() -> None:
    policy = with_range("bin", "temp", [-60, 1000])
    policy["kinds"]["bin"]["fields"]["temp"]["personal"] = True
    with pytest.raises(ConfigError, match="people-related field"):
        PolicyGate(policy)


def test_a_single_value_range_is_allowed() -> None:
    gate = PolicyGate(with_range("bin", "tilt", [0, 0]))
    body: dict[str, Any] = {"m": {"tilt": 1, "bat": 80}}
    assert gate.drop_out_of_range(body, "bin") == (OutOfRange("tilt", 1, 0, 0),) and body["m"] == {"bat": 80}


async def test_ingest_stores_the_rest_counts_per_field_and_warns_once_a_minute_per_device_and_field(
        registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """End to end through ingest to SQLite: the out-of-range values are not stored, the rest is,
    every report acknowledged; counted per field; one WARNING per device and field a minute."""
    wall = [0.0]
    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=metrics, batch_ms=10, log_monotonic=lambda: wall[0])
    await ingest.start()
    c = Collector()
    caplog.set_level(logging.WARNING, logger="gateway")
    sent = [("bin-1", 1, {"temp": 9000, "bat": 80, "tilt": 0}),
            ("bin-1", 2, {"temp": 9000, "bat": 80, "tilt": 0}),  # held back: same device and field
            ("bin-1", 3, {"temp": 12, "bat": 80, "tilt": 7}),    # another field of that device: warned
            ("bin-2", 1, {"temp": 9000, "bat": 70, "tilt": 0})]  # another device: warned
    for device, seq, m in sent:
        ingest.feed(report_frame(device, seq, KEYS[device], m=m), c.link)
        await _settle(ingest)
    wall[0] = 61.0
    ingest.feed(report_frame("bin-1", 4, KEYS["bin-1"], m={"temp": -80, "bat": 80}), c.link)  # a minute on
    await _settle(ingest)
    ingest.feed(report_frame("bin-1", 4, KEYS["bin-1"], m={"temp": -80, "bat": 80}), c.link)  # re-sent copy
    await _settle(ingest)
    await ingest.stop()
    ingest.close()
    assert c.acks[-1] == ("bin-1", 4) and ("bin-2", 1) in c.acks
    q = ReportQueries(db)
    try:
        stored = [(r.device, r.seq, r.m) for r in q.reports(device="bin-1") + q.reports(device="bin-2")]
    finally:
        q.close()
    assert stored == [("bin-1", 1, {"bat": 80, "tilt": 0}), ("bin-1", 2, {"bat": 80, "tilt": 0}),
                      ("bin-1", 3, {"temp": 12, "bat": 80}), ("bin-1", 4, {"bat": 80}),
                      ("bin-2", 1, {"bat": 70, "tilt": 0})]
    assert metrics.value("civicedge_values_out_of_range_total", {"kind": "bin", "field": "temp"}) == 4
    assert metrics.value("civicedge_values_out_of_range_total", {"kind": "bin", "field": "tilt"}) == 1
    assert metrics.value("civicedge_fields_dropped_total", {"reason": "out_of_range"}) == 5
    assert metrics.value("civicedge_fields_dropped_total", {"reason": "release_period"}) == 0
    assert metrics.value("civicedge_rejections_total", {"reason": "policy"}) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        "bin-1 seq 1: temp = 9000 is outside its valid_range [-60, 1000] (policy), dropped: not stored or published, "
        "the rest of the report kept (a faulty sensor or firmware: check the board)",
        "bin-1 seq 3: tilt = 7 is outside its valid_range [0, 1] (policy), dropped: not stored or published, the rest "
        "of the report kept (a faulty sensor or firmware: check the board)",
        "bin-2 seq 1: temp = 9000 is outside its valid_range [-60, 1000] (policy), dropped: not stored or published, "
        "the rest of the report kept (a faulty sensor or firmware: check the board)",
        "bin-1 seq 4: temp = -80 is outside its valid_range [-60, 1000] (policy), dropped: not stored or published, "
        "the rest of the report kept (a faulty sensor or firmware: check the board) (1 more such value(s) of this "
        "device and field since the last such line)",
    ], warned


async def test_held_back_range_warnings_are_logged_at_stop(registry: Registry, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "r.sqlite"
    ingest = IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(registry, load_policy()),
                           metrics=GatewayMetrics("gw"), batch_ms=10, log_monotonic=lambda: 0.0)
    await ingest.start()
    c = Collector()
    caplog.set_level(logging.WARNING, logger="gateway")
    for seq in (1, 2, 3):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"], m={"bat": 250, "temp": 12}), c.link)
        await _settle(ingest)
    await ingest.stop()
    ingest.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and warned[0].startswith("bin-1 seq 1: bat = 250 is outside its valid_range [0, 100]")
    assert warned[1] == "2 more bin-1 bat value(s) outside the policy valid_range dropped since the last such line"


def test_mot_release_and_counts_are_never_judged_against_a_range(registry: Registry) -> None:
    """A noisy count far above anything plausible is a valid release (its noise has no bound)."""
    verifier = Verifier(registry, load_policy())
    v = verifier.verify(report_frame("sl-1", 1, KEYS["sl-1"], "streetlight", **mot_release(1, 1_000_000)),
                        link="serial:t", now=0)
    assert v.record.m == {"mot": 1_000_000} and v.out_of_range == ()
