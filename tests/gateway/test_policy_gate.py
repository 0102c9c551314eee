"""The policy gate re-checks the whole privacy policy (firmware/policy.json), not only field names.

Authentic frames (valid key) that break the policy are refused with reason ``policy`` and a message
naming the rule; what the real firmware sends (run under MicroPython with the shipped policy, and
with a policy that releases every window) passes.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import KEYS
from helpers import MOT_PERIOD, MOT_T0, WINDOW_T0, fill_release, mot_release

from gateway.errors import RejectedReport
from gateway.pipeline import PolicyGate, Verifier
from gateway.protocol import FRAME_REPORT, build_frame
from gateway.registry import Registry
from gateway.resources import firmware_dir, load_policy

DAY0 = WINDOW_T0 - WINDOW_T0 % 86400


def frame(device: str, seq: int, body: dict[str, Any]) -> bytes:
    """An authenticated REPORT frame of a :data:`KEYS` device (``k`` from the device name)."""
    body = {"k": "streetlight" if device.startswith("sl") else "bin", "h": [], **body}
    return build_frame(FRAME_REPORT, device, seq, body, KEYS[device])


REFUSED = [
    ("sl-1", {"t": "win", "w": MOT_T0, "l": MOT_PERIOD, "m": {"mot": 7}},
     "mot released without its epsilon in e (policy: 500 milli-epsilon)"),
    ("sl-1", {"t": "win", "w": WINDOW_T0, "l": 900, "m": {"mot": 7}, "e": {"mot": 500}},
     "mot is released only in win reports over 21600 s, not in a 'win' report over 900 s"),
    ("sl-1", {"t": "win", "w": MOT_T0, "l": MOT_PERIOD + 900, "m": {"mot": 7}, "e": {"mot": 500}},
     "not in a 'win' report over 22500 s"),
    ("sl-1", mot_release(1, 4), "mot is below k = 5"),
    ("sl-1", mot_release(1, None, e={"mot": 2000}),
     "e[mot] = 2000 milli-epsilon is above the policy's per-release epsilon 500"),
    ("sl-1", mot_release(1, 7, e={"mot": 0}), "e[mot] = 0 milli-epsilon: a release spends a positive epsilon"),
    ("sl-1", {"t": "hour", "w": WINDOW_T0 - WINDOW_T0 % 3600, "l": 3600, "m": {"mot": 7, "wh": 10},
              "e": {"mot": 500}}, "mot is released only in win reports over 21600 s, not in a 'hour' report"),
    ("sl-1", {"t": "alarm", "w": WINDOW_T0, "l": 60, "m": {"mot": 7}, "a": ["lamp_fail"]},
     "mot is released only in win reports over 21600 s, not in a 'alarm' report"),
    ("sl-1", {"t": "alarm", "w": WINDOW_T0, "l": 60, "m": {}, "e": {"mot": 500}, "a": ["lamp_fail"]},
     "not in a 'alarm' report"),
    ("bin-1", {"t": "boot", "w": WINDOW_T0, "l": 60, "m": {}, "e": {"lid": 500}}, "not in a 'boot' report"),
    ("bin-1", {"t": "win", "w": WINDOW_T0, "l": 900, "m": {"lid": 7, "temp": 12}, "e": {"lid": 500}},
     "lid is released only in day reports over 86400 s, not in a 'win' report over 900 s"),
    ("bin-1", {"t": "day", "w": DAY0, "l": 86400, "m": {"lid": 3}, "e": {"lid": 500}}, "lid is below k = 5"),
    ("bin-1", {"t": "win", "w": WINDOW_T0, "l": 900, "m": {"fill": 40}, "e": {"fill": 7}},
     "e names field(s) that are not personal (noisy_count): fill"),
    ("bin-1", {"t": "win", "w": WINDOW_T0, "l": 900, "m": {"temp": 12}, "fw": "dbg lid@12:03:17,12:09:44"},
     "fw is not a version string"),
    ("bin-1", {"t": "win", "w": WINDOW_T0, "l": 900, "m": {"temp": 12}, "fw": "1" * 33}, "is not a version string"),
    # fill steps up with each deposit: only the level at the end of each 6 h leaves (privacy audit); over a
    # shorter period it is dropped (test_fill_over_a_shorter_period_is_dropped_and_the_rest_kept), over a
    # longer one refused: the gate knows only the policy's period
    ("bin-1", fill_release(1, 40, l=43200, w=MOT_T0 - MOT_T0 % 43200),
     "fill is released only in win reports over 21600 s (policy release_every_s; released more often its steps "
     "would date the events behind them), not over 43200 s"),
    ("bin-1", fill_release(1, 40, l=43200, w=MOT_T0 - MOT_T0 % 43200, m={"temp": 12}),
     "a win report covers 900 s (or a field's release period), not 43200"),
    ("bin-1", fill_release(1, 40, m={"fill": 40, "temp": 12}), "a 21600 s release may carry only fill, not temp"),
    ("bin-1", {"t": "alarm", "w": WINDOW_T0, "l": 60, "m": {"temp": 71, "fill": 40}, "a": ["fire"]},
     "an alarm report carries only the fields its alarm codes name (policy alarms.<code>.fields: temp), not fill"),
    ("bin-1", {"t": "alarm", "w": WINDOW_T0, "l": 60, "m": {"fill": 40}, "a": ["tip"]},
     "(policy alarms.<code>.fields: none), not fill"),
    ("sl-1", {"t": "alarm", "w": WINDOW_T0, "l": 60, "m": {"lamp": 1}, "a": ["lamp_fail"]},
     "(policy alarms.<code>.fields: none), not lamp"),
]


@pytest.mark.parametrize(("device", "body", "message"), REFUSED)
def test_a_report_outside_the_policy_is_refused_with_the_rule_it_breaks(
        registry: Registry, device: str, body: dict[str, Any], message: str) -> None:
    verifier = Verifier(registry, load_policy())
    with pytest.raises(RejectedReport) as info:
        verifier.verify(frame(device, 3, body), link="serial:x", now=0.0)
    assert info.value.reason == "policy"
    assert message in str(info.value)
    # what it says is logged: never a personal field's value, nor a free-form fw (it could carry anything)
    assert not any(s in str(info.value) for s in ("= 4", "= 3", "lid@"))


@pytest.mark.parametrize(("device", "body"), [
    ("sl-1", mot_release(1, 5)),                                       # k itself is released
    ("sl-1", mot_release(2, None)),                                    # suppressed below k: e only
    ("sl-1", {"t": "win", "w": WINDOW_T0, "l": 900, "m": {"lux": 120, "lvl": 37, "lamp": 1}, "fw": "0.1.0"}),
    ("sl-1", {"t": "hour", "w": WINDOW_T0 - WINDOW_T0 % 3600, "l": 3600, "m": {"wh": 33}}),
    ("sl-1", {"t": "alarm", "w": WINDOW_T0, "l": 60, "m": {}, "a": ["lamp_fail"]}),
    ("bin-1", {"t": "day", "w": DAY0, "l": 86400, "m": {"lid": 23}, "e": {"lid": 500}}),
    ("bin-1", {"t": "day", "w": DAY0, "l": 86400, "m": {}, "e": {"lid": 500}}),
    ("bin-1", {"t": "win", "w": WINDOW_T0, "l": 900, "m": {"temp": -7, "tilt": 0, "bat": 80},
               "fw": "0.1.0+dev-3"}),
    ("bin-1", fill_release(1, 40)),                                    # the level at the end of 6 h
    ("bin-1", {"t": "alarm", "w": WINDOW_T0, "l": 60, "m": {"temp": 71}, "a": ["fire"]}),
    ("bin-1", {"t": "alarm", "w": WINDOW_T0, "l": 60, "m": {"temp": 71}, "a": ["tip", "fire"]}),
    ("bin-1", {"t": "alarm", "w": WINDOW_T0, "l": 60, "m": {}, "a": ["tip"]}),
    ("bin-1", {"t": "boot", "w": WINDOW_T0, "l": 60, "m": {}}),
])
def test_reports_within_the_policy_pass(registry: Registry, device: str, body: dict[str, Any]) -> None:
    record = Verifier(registry, load_policy()).verify(frame(device, 3, body), link="serial:x", now=0.0).record
    assert (record.type, record.m, record.e) == (body["t"], body["m"], body.get("e", {}))


def test_fill_over_a_shorter_period_is_dropped_and_the_rest_kept(registry: Registry) -> None:
    """A bin on firmware from before fill's 6-hour period sends fill in every 15-minute window: fill is
    left out (its steps would date the deposits), the window's temp, tilt and bat are kept (fire
    detection must not wait for the re-flash). Personal fields over a shorter period stay refused."""
    verifier = Verifier(registry, load_policy())
    body = {"t": "win", "w": WINDOW_T0, "l": 900, "m": {"fill": 40, "temp": 12, "tilt": 0, "bat": 80}}
    verified = verifier.verify(frame("bin-1", 3, body), link="serial:x", now=0.0)
    assert verified.record.m == {"temp": 12, "tilt": 0, "bat": 80} and verified.dropped == ("fill",)
    only_fill = verifier.verify(frame("bin-1", 4, {"t": "win", "w": WINDOW_T0, "l": 900, "m": {"fill": 40}}),
                                link="serial:x", now=0.0)
    assert only_fill.record.m == {} and only_fill.dropped == ("fill",)
    assert verifier.verify(frame("bin-1", 5, fill_release(1, 40)), link="serial:x", now=0.0).dropped == ()
    with pytest.raises(RejectedReport, match="mot is released only in win reports over 21600 s"):
        verifier.verify(frame("sl-1", 3, {"t": "win", "w": WINDOW_T0, "l": 900, "m": {"mot": 7, "lux": 10},
                                          "e": {"mot": 500}}), link="serial:x", now=0.0)


async def test_refused_reports_are_counted_and_neither_stored_nor_published(registry: Registry,
                                                                            tmp_path: Path) -> None:
    """Through the real ingest service and SQLite store (with an MQTT outbox): only the one valid
    report is stored and queued upstream; every policy breach is counted under ``policy``."""
    from test_verify_ingest import Collector, _settle

    from gateway.metrics import GatewayMetrics
    from gateway.pipeline import IngestService
    from gateway.storage import ReportQueries, ReportStore

    db = tmp_path / "r.sqlite"
    metrics = GatewayMetrics("gw")
    store = ReportStore(db, gateway_id="gw", outbox_encoder=lambda r: ("city/%s" % r.device, b"%d" % r.seq))
    ingest = IngestService(store=store, verifier=Verifier(registry, load_policy()), metrics=metrics, batch_ms=10)
    await ingest.start()
    c = Collector()
    seqs = {"sl-1": 0, "bin-1": 0}
    for device, body, _message in REFUSED:
        seqs[device] += 1
        ingest.feed(frame(device, seqs[device], body), c.link)
    ingest.feed(frame("sl-1", seqs["sl-1"] + 1, mot_release(1, 9)), c.link)
    await _settle(ingest)
    await ingest.stop()
    ingest.close()
    q = ReportQueries(db)
    try:
        assert [(r.device, r.m) for r in q.reports(device="sl-1")] == [("sl-1", {"mot": 9})]
        assert q.reports(device="bin-1") == [] and q.count_reports() == 1
    finally:
        q.close()
    assert metrics.value("civicedge_rejections_total", {"reason": "policy"}) == len(REFUSED)
    assert [m.topic for m in store.outbox_peek(10)] == ["city/sl-1"]
    store.close()


# -- policy version skew: a board flashed with another policy.json than the gateway runs ------------
# A refused authentic report is acknowledged past and deleted on the device, so the gate accepts a
# release at least as strict as its own policy and refuses only a looser one (docs/privacy.md).

def skewed(change: dict[str, Any], field: str = "mot", kind: str = "streetlight") -> dict[str, Any]:
    """The shipped policy with ``change`` applied to one field (the gateway's side of the skew)."""
    policy = copy.deepcopy(load_policy())
    policy["kinds"][kind]["fields"][field].update(change)
    return policy


@pytest.mark.parametrize(("body", "why"), [
    (mot_release(1, 9, e={"mot": 400}), "a smaller epsilon"),
    (mot_release(1, None, e={"mot": 1}), "a smaller epsilon, suppressed"),
    (mot_release(1, 10), "a board with k = 10 sends only values >= 10"),
])
def test_a_board_stricter_than_the_gateway_policy_is_accepted(registry: Registry, body: dict[str, Any],
                                                             why: str) -> None:
    record = Verifier(registry, load_policy()).verify(frame("sl-1", 3, body), link="serial:x", now=0.0).record
    assert (record.w, record.l, record.m, record.e) == (body["w"], body["l"], body["m"], body["e"]), why


@pytest.mark.parametrize(("gateway", "body", "message"), [
    ({"eps_per_release_milli": 400}, mot_release(1, 9),
     "e[mot] = 500 milli-epsilon is above the policy's per-release epsilon 400"),
    ({"release_every_s": 43200}, mot_release(1, 9),
     "mot is released only in win reports over 43200 s, not in a 'win' report over 21600 s"),
    ({"k": 10}, mot_release(1, 7), "mot is below k = 10"),
    ({"quantum": 5}, mot_release(1, 7), "mot is not a multiple of its quantum 5 (policy)"),
])
def test_a_board_looser_than_the_gateway_policy_is_refused(registry: Registry, gateway: dict[str, Any],
                                                          body: dict[str, Any], message: str) -> None:
    verifier = Verifier(registry, skewed(gateway))
    with pytest.raises(RejectedReport) as info:
        verifier.verify(frame("sl-1", 3, body), link="serial:x", now=0.0)
    assert info.value.reason == "policy" and message in str(info.value)
    assert "= 7" not in str(info.value) and "= 9" not in str(info.value)  # no personal value in what is logged


def test_a_personal_value_on_a_coarser_multiple_of_its_quantum_passes(registry: Registry) -> None:
    verifier = Verifier(registry, skewed({"quantum": 5}))
    assert verifier.verify(frame("sl-1", 3, mot_release(1, 10)), link="serial:x", now=0.0).record.m == {"mot": 10}


@pytest.mark.parametrize(("w", "l"), [(MOT_T0 + 2 * MOT_PERIOD, 2 * MOT_PERIOD), (DAY0, 86400)],
                         ids=["every 12 h", "once a day"])
def test_a_release_over_another_period_than_the_policys_is_refused(registry: Registry, w: int, l: int) -> None:  # noqa: E741
    """Review: accepting whole multiples of the period let releases of one count over 6 h, 12 h, 24 h ...
    overlap (each over the same events, each its own period for the store's one-release rule), beyond
    the daily budget. The period is the policy's own; a board with another one is a policy refusal (with
    the rate-limited warning), and its policy.json must be changed with the gateway's."""
    verifier = Verifier(registry, load_policy())
    with pytest.raises(RejectedReport) as info:
        verifier.verify(frame("sl-1", 3, mot_release(1, 12, w=w, l=l)), link="serial:x", now=0.0)
    assert info.value.reason == "policy"
    assert "mot is released only in win reports over 21600 s, not in a 'win' report over %d s" % l in str(info.value)


@pytest.mark.parametrize(("gateway", "device", "m", "stored", "changed"), [
    (None, "sl-1", {"lux": 123, "lvl": 37, "lamp": 0}, {"lux": 120, "lvl": 37, "lamp": 0}, ("lux",)),
    (None, "bin-1", {"bat": 85, "temp": -7}, {"bat": 90, "temp": -7}, ("bat",)),
    # the gateway's lux quantum went 10 -> 20; the board still quantises to 10 (lvl and lamp not lost)
    ({"quantum": 20}, "sl-1", {"lux": 130, "lvl": 60, "lamp": 1}, {"lux": 140, "lvl": 60, "lamp": 1}, ("lux",)),
    ({"quantum": 20}, "sl-1", {"lux": 120, "lvl": 60, "lamp": 0}, {"lux": 120, "lvl": 60, "lamp": 0}, ()),
])
def test_a_non_personal_value_off_its_quantum_is_stored_requantised(
        registry: Registry, gateway: dict[str, Any] | None, device: str, m: dict[str, int], stored: dict[str, int],
        changed: tuple[str, ...]) -> None:
    """Nothing personal leaks from a finer lux: the gateway stores (and publishes) it at its own policy's
    precision, rounded to the nearest multiple as the firmware rounds, and says which fields it rounded."""
    policy = load_policy() if gateway is None else skewed(gateway, "lux")
    verified = Verifier(registry, policy).verify(
        frame(device, 3, {"t": "win", "w": WINDOW_T0, "l": 900, "m": m}), link="serial:x", now=0.0)
    assert verified.record.m == stored and verified.coarsened == changed


@pytest.mark.parametrize(("where", "key", "value", "message"), [
    ("both", "k", None, "kinds.streetlight.fields.mot: no k (and none in defaults)"),
    ("both", "eps_per_release_milli", None,
     "kinds.streetlight.fields.mot: no eps_per_release_milli (and none in defaults)"),
    ("field", "k", "5", "kinds.streetlight.fields.mot.k must be a whole number >= 1, not '5'"),
    ("field", "eps_per_release_milli", 0,
     "kinds.streetlight.fields.mot.eps_per_release_milli must be a whole number >= 1, not 0"),
    ("field", "release_every_s", 1.5, "kinds.streetlight.fields.mot.release_every_s must be a whole number >= 1"),
    ("lux", "quantum", 0, "kinds.streetlight.fields.lux.quantum must be a whole number >= 1, not 0"),
])
def test_a_policy_without_what_the_gate_needs_is_refused_at_start(where: str, key: str, value: Any,
                                                                  message: str) -> None:
    """A missing k or epsilon crashed check() with a TypeError on the first release; now the gateway
    does not start with such a policy, and says what is missing."""
    from gateway.errors import ConfigError

    policy = copy.deepcopy(load_policy())
    fields = policy["kinds"]["streetlight"]["fields"]
    target = fields["lux"] if where == "lux" else fields["mot"]
    if value is None:
        target.pop(key)
        policy["defaults"].pop(key)
    else:
        target[key] = value
    with pytest.raises(ConfigError) as info:
        PolicyGate(policy)
    assert message in str(info.value) and info.value.reason == "bad_value"


@pytest.mark.parametrize(("change", "message"), [
    (lambda k: k["bin"]["fields"]["fill"].update(report="hour"),
     "kinds.bin.fields.fill has release_every_s, so its report must be win, not 'hour'"),
    (lambda k: k["bin"]["fields"]["fill"].update(release_every_s=0),
     "kinds.bin.fields.fill.release_every_s must be a whole number >= 1, not 0"),
    (lambda k: k["bin"]["alarms"]["fire"].update(fields=["lid"]),
     "kinds.bin.alarms.fire.fields: 'lid' is not a non-personal field of bin"),
    (lambda k: k["bin"]["alarms"]["tip"].update(fields="fill"), "kinds.bin.alarms.tip.fields must be a list"),
])
def test_a_policy_with_a_bad_release_period_or_alarm_fields_is_refused_at_start(change: Any, message: str) -> None:
    from gateway.errors import ConfigError

    policy = copy.deepcopy(load_policy())
    change(policy["kinds"])
    with pytest.raises(ConfigError) as info:
        PolicyGate(policy)
    assert message in str(info.value) and info.value.reason == "bad_value"


def test_without_a_fill_period_fill_leaves_in_every_window() -> None:
    """The gate follows the policy: without fill's release_every_s (DESIGN's default) a window carries it."""
    policy = copy.deepcopy(load_policy())
    del policy["kinds"]["bin"]["fields"]["fill"]["release_every_s"]
    gate = PolicyGate(policy)
    body = {"t": "win", "k": "bin", "w": WINDOW_T0, "l": 900, "m": {"fill": 40, "temp": 12}}
    assert gate.check(body, "bin") is None and gate.win_period_problem(body, "bin") is None
    assert gate.check_and_drop(body, "bin") == (None, ()) and body["m"] == {"fill": 40, "temp": 12}
    shipped = PolicyGate(load_policy())  # with the 6-hour period the window keeps temp only
    assert shipped.check(body, "bin") is None and body["m"] == {"fill": 40, "temp": 12}  # check drops nothing
    assert shipped.check_and_drop(body, "bin") == (None, ("fill",))
    assert body["m"] == {"temp": 12}


def test_every_field_with_a_quantum_is_one_the_firmware_quantises() -> None:
    """The firmware rounds only the fields it reads a quantum for (lux, fill, bat: civic/apps); temp is
    whole degrees, lvl an unquantised mean, wh a rounded division. A quantum > 1 on any other field
    would put the firmware's values off it (a personal one would then be refused in every report)."""
    import re

    apps = firmware_dir() / "lib" / "civic" / "apps"
    quantised = {(app.stem, name) for app in apps.glob("*.py")
                 for name in re.findall(r'field\("(\w+)"\)\.get\("quantum"', app.read_text())}
    assert {("streetlight", "lux"), ("bin", "fill"), ("bin", "bat")} <= quantised  # the scan finds them
    for kind, spec in load_policy()["kinds"].items():
        for name, field in spec["fields"].items():
            if field.get("quantum", 1) > 1:
                assert (kind, name) in quantised, (
                    "%s.%s has quantum %d in firmware/policy.json but the firmware does not quantise it: "
                    "round it in civic/apps/%s.py (quantise) first" % (kind, name, field["quantum"], kind))


def every_window_policy() -> dict[str, Any]:
    """The shipped policy without ``release_every_s``: personal counts leave every window (mot) or
    every day (lid, a ``day`` report), as the firmware defaults them."""
    policy = copy.deepcopy(load_policy())
    for spec in policy["kinds"].values():
        for field in spec["fields"].values():
            field.pop("release_every_s", None)
    return policy


def test_without_release_every_s_a_count_leaves_every_window_and_nowhere_else() -> None:
    gate = PolicyGate(every_window_policy())
    base = {"t": "win", "k": "streetlight", "w": WINDOW_T0, "l": 900}
    assert gate.check({**base, "m": {"mot": 9}, "e": {"mot": 500}}, "streetlight") is None
    assert gate.check({**base, "m": {}, "e": {"mot": 500}}, "streetlight") is None
    # a board still on the 6-hourly policy releases over another period: refused (releases must not overlap)
    assert gate.win_period_problem({**base, "w": MOT_T0, "l": MOT_PERIOD, "m": {"mot": 9}, "e": {"mot": 500}},
                                   "streetlight") is not None
    hour = {**base, "t": "hour", "w": MOT_T0, "l": 3600, "m": {"mot": 9}, "e": {"mot": 500}}
    assert gate.check(hour, "streetlight") == "mot is released only in win reports over 900 s, not in a 'hour' report over 3600 s"
    day = {"t": "day", "k": "bin", "w": DAY0, "l": 86400, "m": {"lid": 9}, "e": {"lid": 500}}
    assert gate.check(day, "bin") is None


def test_policy_defaults_give_epsilon_and_k_when_a_field_leaves_them_out() -> None:
    policy = copy.deepcopy(load_policy())
    mot = policy["kinds"]["streetlight"]["fields"]["mot"]
    del mot["eps_per_release_milli"], mot["k"]
    policy["defaults"].update(eps_per_release_milli=250, k=8)
    gate = PolicyGate(policy)
    body = mot_release(1, 7, e={"mot": 250})
    assert gate.check(body, "streetlight") == "mot is below k = 8 (a release under this policy leaves such a value out)"
    assert gate.check(mot_release(1, 8, e={"mot": 250}), "streetlight") is None


# -- what the real firmware sends -----------------------------------------------------------------

_FIRMWARE_RUN = r"""
from civic import VERSION
from civic.apps.streetlight import StreetlightApp
from civic.apps.bin import BinApp
def drive(coro):
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value
out = []
# streetlight: 2 days, a tick a minute; dark all the time, a walker every 3 min, the lamp fails once
pol, rep, rel = pipeline("streetlight")
pir, light, lamp, cur = FakePin(), FakeADC(50000), FakePWM(), FakeADC(0)
hw = FakeHW(pir=pir, light=light, lamp=lamp, lamp_current=cur)
clock = FakeClock(START)
app = StreetlightApp(hw, CFG_SL, pol, rep, rel, clock, log=lambda s: None)
app.attach()
n = 0
while clock.ms < 2 * 86400 * 1000:
    n += 1
    light.uv = 50000 + (n * 7919) % 40000  # 15..27 lx: dark, and the window means off the 10 lx quantum
    if n % 3 == 0:
        pir.pulse()
    cur.uv = 0 if 1500 <= n < 1510 else 260 * (lamp.duty or 0) * 1000 // 65535
    app.tick(clock.ms)
    clock.ms += 60000
out += [["sl", b] for b in rep.sent]
# bin: 2 days of readings every 5 min, the lid opened now and then, one fire and one tip-over
pol, rep, rel = pipeline("bin")
table = CFG_BIN["cal"]["temp"]["table"]  # [uV, C] from 120 C down to -20 C
ping = [3000]
ptemp, pbat, tilt = FakeADC(0), FakeADC(0), FakePin(0)
hw = FakeHW(trig=FakePin(), echo=FakePin(), pulse_us=lambda p, l, t: ping[0], temp=ptemp, battery=pbat,
            tilt=tilt, lid=FakePin(0))
clock = FakeClock(START)
async def no_pause(ms):
    pass
bapp = BinApp(hw, CFG_BIN, pol, rep, rel, clock, state_path="/flash_bin.json", pause=no_pause, log=lambda s: None)
i = 0
while clock.ms < 2 * 86400 * 1000:
    i += 1
    for j in range(i % 4):
        bapp.lid_opened(clock.time() + 10 * j)
    ping[0] = 1500 + (i * 37) % 4000
    ptemp.uv = table[0][0] if 200 <= i < 203 else table[9 + i % 3][0]
    pbat.uv = 1700000 + (i * 1237) % 300000
    tilt.v = 1 if 300 <= i < 302 else 0
    drive(bapp.cycle())
    clock.ms += 300 * 1000
out += [["bin", b] for b in rep.sent]
print(json.dumps([VERSION, out]))
"""


def firmware_bodies(policy: dict[str, Any]) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """The firmware version and every report body the real streetlight and bin apps build over two
    days under ``policy`` (MicroPython, with the firmware tests' fake hardware and clock)."""
    import hil.sim.mprun as mprun
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))
    from test_apps_support import prelude  # the firmware tests' hardware doubles (not a conftest)

    from hil.boards import load_board

    start = DAY0 - 86400 * 30 + 17 * 3600  # 18:00 local: dark hours and a day boundary inside two days
    code = (prelude("streetlight-esp32")
            + "POLICY_TEXT = %r\nCFG_SL = CFG\nCFG_BIN = json.loads(%r)\nSTART = %d\n" % (
                json.dumps(policy), json.dumps(load_board("bin-esp32c3").to_device_config()), start)
            + _FIRMWARE_RUN)
    res = mprun.run_micropython(code, libs=[firmware_dir() / "lib"], seed=11, timeout_s=600)
    version, bodies = json.loads(res.stdout.strip().splitlines()[-1])
    return version, [(dev, body) for dev, body in bodies]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("policy_name", ["shipped", "every_window"])
def test_what_the_real_firmware_sends_passes_the_gate(registry: Registry, policy_name: str) -> None:
    policy = load_policy() if policy_name == "shipped" else every_window_policy()
    version, bodies = firmware_bodies(policy)
    verifier = Verifier(registry, policy)
    seen: dict[tuple[str, str], int] = {}
    for seq, (dev, body) in enumerate(bodies, start=1):
        device = "sl-1" if dev == "sl" else "bin-1"
        body["fw"] = version  # the real Reporter puts civic.VERSION in every report
        record = verifier.verify(frame(device, seq, body), link="serial:x", now=0.0).record
        key = (dev, record.type)
        seen[key] = seen.get(key, 0) + 1
        for f in ("mot", "lid"):
            if f in record.e:
                seen[(dev, f)] = seen.get((dev, f), 0) + 1
    # every kind of report the apps make was exercised, personal releases included
    want = {("sl", "win"), ("sl", "hour"), ("sl", "alarm"), ("sl", "mot"),
            ("bin", "win"), ("bin", "day"), ("bin", "alarm"), ("bin", "lid")}
    assert want <= set(seen), seen
    # the daily budget (2000 milli) allows 4 releases of 500 a day: 6-hourly, or the day's first 4 windows
    assert seen[("sl", "mot")] >= 6 and seen[("bin", "lid")] >= 1


@pytest.mark.parametrize(("kind", "body", "message"), [
    ("streetlight", {"t": "hour", "w": WINDOW_T0 - WINDOW_T0 % 3600, "l": 3600, "m": {"wh": 40, "lux": 30}},
     "lux reported in a hour report (policy: lux in win reports)"),
    ("streetlight", {"t": "win", "w": WINDOW_T0, "l": 900, "m": {"lux": 30, "wh": 40}},
     "wh reported in a win report (policy: wh in hour reports)"),
    ("bin", {"t": "day", "w": DAY0, "l": 86400, "m": {"fill": 40}}, "fill reported in a day report"),
])
def test_a_non_personal_field_only_in_its_report_type(kind: str, body: dict[str, Any], message: str) -> None:
    """Privacy review follow-up: a non-personal field was accepted in any periodic report (lux in an hour
    report). Each is reported in its policy "report" type; an alarm may carry the values of the moment."""
    gate = PolicyGate(load_policy())
    problem = gate.check({"k": kind, **body}, kind)
    assert problem is not None and message in problem
    fire = {"t": "alarm", "k": "bin", "w": WINDOW_T0 - WINDOW_T0 % 60, "l": 60, "m": {"temp": 71}, "a": ["fire"]}
    assert gate.check(fire, "bin") is None
