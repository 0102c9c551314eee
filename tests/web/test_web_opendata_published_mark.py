"""The publication mark saved in the store's ``meta`` table after a clock that was wrong.

The bound of each kind of public answer (entities, CSV: the newest report id published) never goes
back. The mark (the time the answer is as of, at which a device's silence is judged) followed it: a
clock once 30 days ahead left a mark 30 days ahead in ``meta``, read back at every start, so after a
restart with the right clock every device was silent in the public answers until the real clock
reached the saved mark. The mark is the clock's again once the clock is no longer behind the newest
stored report.
"""

from __future__ import annotations

from gateway.resources import load_policy
from gateway.storage.store import ReportRecord
from gateway.web import liveness, publication
from gateway.web.source import StoreFleetSource

from .support import NOW, Fleet

DAY = 86400
AHEAD = NOW + 30 * DAY


def window(seq: int, w: int, received_at: float, device: str = "sl-01") -> ReportRecord:
    """A streetlight window of ``device`` starting at ``w``, received at ``received_at``."""
    return ReportRecord(device=device, seq=seq, kind="streetlight", zone="centre", type="win", w=w, l=900,
                        m={"lux": 10, "lvl": 40, "lamp": 0}, e={}, a=[], fw=None, received_at=received_at,
                        link="serial:/dev/pts/9", digest="%064x" % seq)


def source(fleet: Fleet, clock: list[float]) -> StoreFleetSource:
    """The open data's source as the gateway builds it, saving what it published in the store."""
    async def save_meta(key: str, value: str) -> None:
        await fleet.ingest.run_in_store(fleet.store.save_meta, key, value)

    return StoreFleetSource(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                            clock=lambda: clock[0], save_meta=save_meta)


async def test_a_mark_saved_by_a_clock_once_ahead_comes_back_to_the_clock_after_a_restart(fleet: Fleet) -> None:
    """Fails before: the mark stayed 30 days ahead, every reporting device stale."""
    fleet.store.insert_batch([window(90_001, NOW, AHEAD - 10)])  # stamped by the clock 30 days ahead
    ahead_id = fleet.queries.last_report_id()
    running = source(fleet, [float(AHEAD + 60)])
    try:
        await running.devices(published=True)
        assert running.published_mark() == publication.entity_mark(AHEAD)
    finally:
        await running.aclose()

    # Restarted with the right clock: until a report stamped by it arrives, the clock is behind the newest
    # stored report, and what was published is held (a WARNING says so).
    clock = [float(NOW + 1700)]
    restarted = source(fleet, clock)
    try:
        await restarted.devices(published=True)
        assert restarted.published_mark() == publication.entity_mark(AHEAD)
        fleet.store.insert_batch([window(90_002, NOW + 900, NOW + 1850)])
        clock[0] = float(NOW + 1900)
        shown = {d.id: d for d in await restarted.devices(published=True)}
        # The clock's mark (12:30), and the report stamped ahead stays published: the bound never goes back.
        assert restarted.published_mark() == NOW + 1800
        assert shown["sl-01"].last_seen == AHEAD - 10
        # The fixture's devices reported at 11:55: not silent at 12:30 (they were at a mark 30 days ahead).
        assert liveness.stale_ids(shown.values(), now=restarted.published_mark(), policy=load_policy()) == set()
        clock[0] = float(NOW + 2 * 3600)
        devices = await restarted.devices(published=True)
        assert restarted.published_mark() == NOW + 2 * 3600
        assert {d.id: d.last_seen for d in devices}["sl-01"] == NOW + 1850
    finally:
        await restarted.aclose()
    bound, saved_mark = publication.decode_published(
        fleet.queries.meta_values("published:entities")["published:entities"])[:2]
    assert bound > ahead_id and saved_mark == NOW + 2 * 3600
