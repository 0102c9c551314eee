"""FleetState.fork: the operators' fleet starts as a copy of the published one.

It lived in gateway.web.source and wrote FleetState's private fields from there, field by field: a
field added to FleetState would have been left at its default in the copy without anyone noticing.
"""

from __future__ import annotations

from gateway.web.snapshot import FleetState

from .support import NOW, Fleet

# Fields a fork sets on purpose rather than copies: a lock of its own, unbounded, derived anew.
SET_BY_FORK = {"_lock", "_bounded", "_data", "_data_key"}


def test_a_fork_copies_every_field_and_shares_no_container(fleet: Fleet) -> None:
    published = FleetState(fleet.queries, bounded=True)
    published.refresh(NOW, upto=fleet.queries.last_report_id() - 3)
    fork = published.fork()
    original, copied = vars(published), vars(fork)
    assert set(copied) == set(original)
    for name, value in original.items():
        if name in SET_BY_FORK:
            continue
        assert copied[name] == value, name
        if isinstance(value, (dict, list, set)):
            assert copied[name] is not value, name  # a refresh of one never changes the other
    assert copied["_lock"] is not original["_lock"] and copied["_bounded"] is False
    assert copied["_data"] is None and copied["_data_key"] is None


def test_a_fork_refreshed_is_what_a_fresh_state_reads(fleet: Fleet) -> None:
    """Forked from the published fleet (reports up to a bound), then refreshed: the same fleet as an
    unbounded state that read the whole store, and the published one unchanged."""
    published = FleetState(fleet.queries, bounded=True)
    before = published.refresh(NOW, upto=fleet.queries.last_report_id() - 3)
    fork = published.fork()
    assert fork.refresh(NOW) == FleetState(fleet.queries).refresh(NOW)
    assert published.refresh(NOW, upto=fleet.queries.last_report_id() - 3) == before
