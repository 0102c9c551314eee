"""The web layer's first read of the store: one read for the published and the operators' fleet.

The public open data reads the fleet as published at the entities' last mark, the operators the
fleet as of now; each used to read the whole store at its first request (~13 s each on a million
reports). The operators' fleet now starts as a copy of the published one plus the reports stored
since its bound; it must hold exactly what a read of the whole store gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.resources import load_policy
from gateway.storage.queries import ReportChanges, ReportQueries
from gateway.storage.store import ReportRecord
from gateway.web.publication import entity_mark
from gateway.web.snapshot import FleetState
from gateway.web.source import StoreFleetSource
from gateway.web.views import DeviceView

from .support import NOW, Fleet

CLOCK = NOW + 600  # 12:10: the entities' mark is 12:00, their bound the reports received before it


class CountingQueries(ReportQueries):
    """The real read API, recording which id ranges ``changes_since`` was asked for."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(db_path)
        self.ranges: list[tuple[int, int | None]] = []

    def changes_since(self, after_id: int, *, upto: int | None = None) -> ReportChanges:
        self.ranges.append((after_id, upto))
        return super().changes_since(after_id, upto=upto)


def _record(device: str, kind: str, seq: int, type_: str, w: int, l: int, m: dict[str, int],  # noqa: E741
            a: list[str], received_at: float, link: str = "serial:/dev/pts/9") -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind=kind, zone="centre", type=type_, w=w, l=l, m=m, e={}, a=a,
                        fw=None, received_at=received_at, link=link, digest="%064x" % (seq * 7 + len(device)))


def _after_the_mark(fleet: Fleet) -> None:
    """Reports received after 12:00 (the morning's are received at 11:59:55): new windows, a device's
    first report, a lamp failing and a bin tipping over, and a revoked device's last report."""
    fleet.store.insert_batch([
        _record("sl-01", "streetlight", 9001, "win", NOW, 900, {"lux": 7, "lvl": 90, "lamp": 1}, [], NOW + 100),
        _record("sl-01", "streetlight", 9002, "alarm", NOW + 60, 60, {}, ["lamp_fail"], NOW + 130),
        _record("sl-02", "streetlight", 9001, "win", NOW, 900, {"lux": 3, "lvl": 60, "lamp": 0}, [], NOW + 140),
        _record("sl-03", "streetlight", 1, "win", NOW, 900, {"lux": 1, "lvl": 40, "lamp": 0}, [], NOW + 200),
        _record("bin-01", "bin", 9001, "alarm", NOW + 120, 60, {}, ["tip"], NOW + 300, "ble:AA:BB:CC:00:00:00"),
        _record("bin-02", "bin", 9001, "win", NOW, 900, {"temp": 14, "tilt": 0, "bat": 70}, [], NOW + 400),
    ])
    fleet.registry.revoke("bin-02")  # bin-03 (never reported) is revoked by the fixture


def _shown(views: list[DeviceView] | Any) -> dict[str, tuple[Any, ...]]:
    return {v.id: (v.revoked, v.last_seen, v.link, dict(v.latest), dict(v.latest_at), v.alarms, v.lamp_changed_at)
            for v in views}


def _expected(fleet: Fleet, data: Any) -> dict[str, tuple[Any, ...]]:
    """What :meth:`StoreFleetSource.devices` shows from a FleetData read from the whole store."""
    out = {}
    for rec in fleet.registry.list():
        st = data.devices.get(rec.id)
        out[rec.id] = ((bool(rec.revoked), None, None, {}, {}, (), None) if st is None else
                       (bool(rec.revoked), st.last_seen, st.link, dict(st.latest), dict(st.latest_at), st.alarms,
                        st.lamp_changed_at))
    return out


async def test_both_fleets_come_from_one_read_and_match_a_read_of_the_whole_store(fleet: Fleet) -> None:
    _after_the_mark(fleet)
    mark = entity_mark(CLOCK)
    assert mark == NOW
    bound = fleet.queries.last_id_received_before(mark)
    newest = fleet.queries.last_report_id()
    assert 0 < bound < newest - 5  # reports on both sides of the mark
    # The reference: each fleet read from the whole store on its own, as before.
    public_ref = FleetState(fleet.queries, bounded=True).refresh(mark, upto=bound)
    operators_ref = FleetState(fleet.queries).refresh(CLOCK)
    assert public_ref.devices != operators_ref.devices  # the two differ: the test can tell them apart

    queries = CountingQueries(fleet.queries.db_path)
    source = StoreFleetSource(store=queries, registry=fleet.registry, policy=load_policy(), clock=lambda: CLOCK)
    try:
        operators = _shown(await source.devices())  # an operator's request first: it loads both
        public = _shown(await source.devices(published=True))
    finally:
        await source.aclose()
        queries.close()
    # The store was read once: up to the bound, then only the reports stored after it.
    assert queries.ranges[:2] == [(0, bound), (bound, None)]
    assert all(after >= bound for after, _ in queries.ranges[1:])
    assert operators == _expected(fleet, operators_ref)
    assert public == _expected(fleet, public_ref)
    # What the cases exercise is in there: a revoked device that reported, alarms on both sides of the
    # mark (the fixture's lamp_fail at 11:00 and the 12:01 one), a failed lamp seen working again at 12:00.
    assert operators["bin-02"][0] and operators["bin-02"][1] == NOW + 400
    assert {a.code for a in operators["sl-01"][5]} == {"lamp_fail"} and not public["sl-01"][5]
    assert {a.code for a in operators["bin-01"][5]} == {"tip"} and not public["bin-01"][5]
    assert {a.code for a in public["sl-02"][5]} == {"lamp_fail"} and not operators["sl-02"][5]
    assert operators["sl-02"][6] == NOW and public["sl-02"][6] is None
    assert operators["sl-03"][1] == NOW + 200 and public["sl-03"][1] is None


async def test_the_published_fleet_first_also_reads_the_store_once(fleet: Fleet) -> None:
    _after_the_mark(fleet)
    bound = fleet.queries.last_id_received_before(entity_mark(CLOCK))
    queries = CountingQueries(fleet.queries.db_path)
    source = StoreFleetSource(store=queries, registry=fleet.registry, policy=load_policy(), clock=lambda: CLOCK)
    try:
        public = _shown(await source.devices(published=True))
        operators = _shown(await source.devices())
    finally:
        await source.aclose()
        queries.close()
    assert queries.ranges[:2] == [(0, bound), (bound, None)]
    assert all(after >= bound for after, _ in queries.ranges[1:])
    assert public == _expected(fleet, FleetState(fleet.queries, bounded=True).refresh(NOW, upto=bound))
    assert operators == _expected(fleet, FleetState(fleet.queries).refresh(CLOCK))
