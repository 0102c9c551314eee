"""An alarm's public time says no more than the mark at which it first shows, under any policy.

The entities change only at marks every ``publication.entity_mark_s(policy)`` (the longest window, at
least 15 minutes), and an alarm is sent at once, so the mark at which it first shows dates its arrival
to one mark step. Its public time was the start of the quarter hour (or longer window of its kind)
holding it: with windows {'bin': 600, 'streetlight': 1200} the marks are 20 minutes apart, and a tip
at 12:16 first shown at 12:20 and dated 12:15 fell in 12:15-12:20, five minutes. It is now the start
of the mark step holding it (``ngsi.alarm_period_s``), so the mark adds nothing to it.

Also (review L3): an alarm that decides no displayed status (a tip under a fire, an alarm of a kind
whose entity has no status) must not move ``Last-Modified``, which would date what the body hides.
"""

from __future__ import annotations

import copy
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.resources import load_policy
from gateway.storage.store import ReportRecord
from gateway.web import ngsi, opendata, publication
from gateway.web.app import create_app
from gateway.web.liveness import window_of
from gateway.web.views import AlarmView, DeviceView

from .support import ADMIN_TOKEN, NOW, Fleet

ENTITIES = "/opendata/ngsi-ld/v1/entities"
BIN_01 = ENTITIES + "/urn:ngsi-ld:WasteContainer:bin-01"
MIN = 60
QUARTER_S = 900


def _policy(windows: dict[str, int | None], default: int | None = None) -> dict[str, Any]:
    """The shipped policy with these kinds' windows (None: the kind has none, so the default's applies)."""
    policy = copy.deepcopy(load_policy())
    for kind, window in windows.items():
        if window is None:
            policy["kinds"][kind].pop("window_s", None)
        else:
            policy["kinds"][kind]["window_s"] = window
    if default is not None:
        policy["defaults"]["window_s"] = default
    return policy


def _alarm(device: str, seq: int, at: int, code: str, kind: str = "bin") -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind=kind, zone="centre", type="alarm", w=at, l=60, m={}, e={},
                        a=[code], fw=None, received_at=at + 20, link="serial:/dev/pts/9", digest="%064x" % seq)


def _lm(resp: Any) -> int:
    return int(parsedate_to_datetime(resp.headers["Last-Modified"]).timestamp())


# --- M1: the public time nests with the marks ---------------------------------------------------------

WINDOW = st.integers(min_value=1, max_value=4 * 3600)


@settings(max_examples=300, deadline=None)
@given(bin_w=WINDOW, light_w=st.one_of(st.none(), WINDOW), default=WINDOW,
       at=st.integers(min_value=1_700_000_000, max_value=1_900_000_000), data=st.data())
def test_the_mark_of_first_appearance_dates_an_alarm_no_finer_than_its_public_time(
        bin_w: int, light_w: int | None, default: int, at: int, data: st.DataObject) -> None:
    """For any windows (a kind without one takes the default's): the period is the mark step, at least
    15 minutes and every kind's window; and every alarm minute in the period of the public time it
    got is first shown at the same mark, so (mark, public time) tells a poller no more than the public
    time: a whole period of at least 15 minutes. (An alarm received after the mark following its own
    minute is not covered: it arrived late, which its mark says whatever the rule.)"""
    policy = _policy({"bin": bin_w, "streetlight": light_w}, default=default)
    step = publication.entity_mark_s(policy)
    period = ngsi.alarm_period_s(policy)
    assert period == step
    assert period >= QUARTER_S and all(period >= window_of(policy, k) for k in policy["kinds"])
    pub = ngsi.public_alarm_time(at, period)
    next_mark = publication.entity_mark(at, step) + step
    received = data.draw(st.integers(min_value=at, max_value=next_mark - 1), label="received")
    shown = publication.entity_mark(received, step) + step
    # Every other alarm time with this public time, received at once, shows at this mark too.
    for other in range(pub, pub + period, MIN):
        assert ngsi.public_alarm_time(other, period) == pub
        assert publication.entity_mark(other, step) + step == shown, (other, pub, shown)


MIXED = [
    pytest.param({"bin": 600, "streetlight": 1200}, None, 16, id="bin10-light20"),  # the review's case
    pytest.param({"bin": 300, "streetlight": 1200}, None, 41, id="bin5-light20"),
    pytest.param({"bin": 1000, "streetlight": 700}, None, 52, id="bin1000s-light700s"),
    pytest.param({"bin": None, "streetlight": 900}, 1800, 47, id="default30"),
    pytest.param({"bin": 3600, "streetlight": 900}, None, 61, id="bin60"),
    pytest.param({"bin": 900, "streetlight": 900}, None, 31, id="shipped"),
]


@pytest.mark.parametrize(("windows", "default", "minute"), MIXED)
async def test_an_alarm_first_shows_at_the_mark_that_ends_its_public_period(
        fleet: Fleet, windows: dict[str, int | None], default: int | None, minute: int) -> None:
    """A tip at NOW + ``minute`` (received 20 s later) is not shown at the mark before its arrival, and
    at the first mark after it its ``observedAt``, the NGSI-LD ``Last-Modified`` and the catalogue's
    ``modified`` are that mark less one mark step: exactly what the mark says. Before, under the
    mixed policies, the quarter hour or kind's window (12:15 for a tip at 12:16 first shown at 12:20)."""
    policy = _policy(windows, default)
    step = publication.entity_mark_s(policy)
    tip_at = NOW + minute * MIN
    mark = publication.entity_mark(tip_at + 20, step) + step  # the first mark after its arrival
    assert mark > tip_at + 20
    fleet.store.insert_batch([_alarm("bin-01", 70_000, tip_at, "tip")])
    clock = {"now": float(mark - 1)}
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=policy,
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=lambda: clock["now"])
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        before = await (await c.get(BIN_01)).json(content_type=None)
        assert before["status"]["value"] != "dropped"  # not yet published (a short window may make it "unknown")
        clock["now"] = float(mark + 1)
        resp = await c.get(BIN_01)
        assert resp.status == 200
        status = (await resp.json(content_type=None))["status"]
        assert status["value"] == "dropped"
        assert status["observedAt"] == ngsi.iso_utc(mark - step)
        assert _lm(resp) == (mark - step) - (mark - step) % MIN  # a header has whole minutes
        index = await c.get("/opendata")
        assert (await index.json(content_type=None))["modified"] == ngsi.iso_utc(mark - step)


# --- L3: only the alarms an entity shows date Last-Modified ------------------------------------------

FIRE_AT = NOW + 20 * MIN  # 12:20: its quarter hour starts 12:15
TIP_UNDER_FIRE_AT = NOW + 50 * MIN  # 12:50: 12:45, which no body shows (the status is "burning")


async def test_a_tip_under_a_fire_does_not_date_last_modified(fleet: Fleet) -> None:
    """bin-01 burns from 12:20 and tips at 12:50: the status is "burning" at 12:15 and nothing shows
    the tip, so neither Last-Modified nor the catalogue's modified may say 12:45 (before: they did)."""
    fleet.store.insert_batch([_alarm("bin-01", 70_001, FIRE_AT, "fire"),
                              _alarm("bin-01", 70_002, TIP_UNDER_FIRE_AT, "tip")])
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=lambda: float(NOW + 3600 + 60))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        one = await c.get(BIN_01)
        assert one.status == 200
        status = (await one.json(content_type=None))["status"]
        assert (status["value"], status["observedAt"]) == ("burning", "2026-11-21T12:15:00Z")
        for path in (BIN_01, ENTITIES, ENTITIES + "?options=keyValues", "/opendata/devices.geojson"):
            resp = await c.get(path)
            assert resp.status == 200, path
            assert _lm(resp) == NOW + 15 * MIN, path
        index = await c.get("/opendata")
        assert (await index.json(content_type=None))["modified"] == "2026-11-21T12:15:00Z"


def _device(kind: str, codes: tuple[tuple[str, int], ...], latest_at: int) -> DeviceView:
    return DeviceView(id="d-1", kind=kind, zone="centre", lat=52.0, lon=4.0, latest={"x": 1},
                      latest_at={"x": latest_at}, alarms=tuple(AlarmView("d-1", code, at, kind) for code, at in codes))


@pytest.mark.parametrize(("kind", "codes", "shown"), [
    ("air", (("smoke", NOW + 40 * MIN),), ()),  # a kind without a status shows no alarm
    ("streetlight", (("tip", NOW + 40 * MIN),), ()),  # a code a streetlight's status does not read
    ("streetlight", (("lamp_fail", NOW + 40 * MIN),), ("lamp_fail",)),
    ("bin", (("tip", NOW + 40 * MIN), ("fire", NOW + 5 * MIN)), ("fire",)),
    ("bin", (("tip", NOW + 40 * MIN),), ("tip",)),
])
def test_last_modified_counts_only_the_alarms_that_decide_a_status(
        kind: str, codes: tuple[tuple[str, int], ...], shown: tuple[str, ...]) -> None:
    """``_last_modified`` takes an alarm's public time only when ``status_alarms`` says the entity shows
    it, and then the same time as the entity's status ``observedAt``."""
    policy = load_policy()
    dev = _device(kind, codes, latest_at=NOW)
    assert ngsi.status_alarms(dev) == shown
    expected = max([NOW] + [ngsi.public_alarm_time(at, 900) for code, at in codes if code in shown])
    assert opendata._last_modified([dev], policy) == float(expected)
    if kind in ngsi.ENTITY_TYPE_BY_KIND:
        entity = ngsi.device_entity(dev, key_values=False, policy=policy)
        if shown:
            assert entity["status"]["observedAt"] == ngsi.iso_utc(expected)
