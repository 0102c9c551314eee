"""The log of when retention removed values, per UTC day of period start (gateway.storage.retention_removals):
a range is dated by the latest removal of the days it reads, days older than the longest retention (and a
week) fold into a floor that only makes dates later, and a value that cannot be read never raises and dates
every day later, never earlier."""

from __future__ import annotations

import pytest

from gateway.storage import retention_removals as rr

DAY = rr.DAY_S
H = 3600


def test_a_range_gets_the_latest_removal_of_its_own_days_only() -> None:
    log = rr.RemovalLog()
    log.add({10, 11}, 1000)
    log.add({11}, 2000)
    assert log.latest(10 * DAY, 11 * DAY) == 1000  # day 10 alone
    assert log.latest(10 * DAY, 12 * DAY) == 2000  # day 11's later removal
    assert log.latest(12 * DAY, 20 * DAY) is None  # untouched days
    assert log.latest(11 * DAY - 1, 11 * DAY) == 1000  # the last second of day 10
    assert log.latest(11 * DAY, 11 * DAY) is None  # empty
    assert rr.decode(log.encode()) == log


def test_days_before_the_kept_ones_fold_into_a_floor_that_never_dates_earlier() -> None:
    log = rr.RemovalLog()
    for day in range(20):
        log.add({day}, 5000 - day)  # older days removed later (a longer retention of another field)
    log.fold(5)
    assert sorted(log.days) == list(range(5, 20)) and log.floor_day == 4 and log.floor_at == 5000
    for day in range(20):
        got = log.latest(day * DAY, (day + 1) * DAY)
        assert got is not None and got >= 5000 - day  # never earlier than what was recorded
    # A removal under the floor (a late report with an old period) is kept apart: the floor's time stays, so
    # the other days under it keep their dates.
    log.add({2}, 9000)
    assert log.floor_at == 5000 and log.latest(2 * DAY, 3 * DAY) == 9000 and log.latest(0, DAY) == 5000
    log.fold(3)  # folded again later: the floor takes its time
    assert log.floor_at == 9000 and log.floor_day == 4 and 2 not in log.days
    assert log.latest(10 * DAY, 11 * DAY) == 5000 - 10  # a day kept apart keeps its own time


def test_the_days_kept_apart_are_capped_whatever_the_policy() -> None:
    log = rr.RemovalLog()
    for day in range(rr.MAX_DAYS + 5):
        log.add({day}, 100 + day)
    assert len(log.days) == rr.MAX_DAYS and log.floor_day == 4 and log.floor_at == 104


def _hourly_passes(retentions: list[int], days: int, log: rr.RemovalLog) -> tuple[int, dict[int, int]]:
    """Hourly passes over ``days`` of data from day 0, each removing the values whose period ended in the
    hour before each retention's cut-off, recorded as the store does (keep_from_day of the retentions)."""
    start = 1795262400 - 1795262400 % DAY
    truth: dict[int, int] = {}
    t = start
    while t < start + days * DAY:
        t += H
        touched = {(t - d * DAY - H) // DAY for d in retentions if t - d * DAY - H >= start}
        if touched:
            log.add(touched, t)
            keep = rr.keep_from_day(retentions, t)
            assert keep is not None
            log.fold(keep)
            for day in touched:
                truth[day] = t
    return t, truth


def test_shipped_like_retentions_keep_the_dates_of_the_days_they_did_not_touch() -> None:
    """Review M1 (rev-fresh): retentions of 90 and 365 days, hourly passes for over a year. The 256 days kept
    apart filled with the 90-day field's days, and every removal at now - 365 landed in the open-ended floor:
    most of the history was re-dated every hour (mirrors fetching the whole archive again hourly)."""
    retentions = [90, 365]
    log = rr.RemovalLog()
    now, truth = _hourly_passes(retentions, 420, log)
    first = (now - 420 * DAY) // DAY
    last_hour = {day for day, at in truth.items() if at > now - 2 * H}
    assert len(last_hour) == 2  # what the last two passes changed: one day per retention
    for day in range(first, now // DAY):
        got = log.latest(day * DAY, (day + 1) * DAY)
        real = truth.get(day)
        if real is not None:
            assert got is not None and got >= real  # never earlier
        if day not in last_hour:
            # Before the fix: 73 of the 420 days (all under its floor) dated within the last two hours.
            assert got is None or got <= now - 2 * H, (day - first, now - got)
        if day >= rr.keep_from_day(retentions, now):  # kept apart: exactly its own last removal
            assert got == real
    # Bounded by the longest retention (and a week), not by how long the gateway ran.
    assert len(log.days) <= 365 + rr.MARGIN_DAYS + 2
    assert log.floor_day is not None and log.floor_at <= now - 7 * DAY
    # One more pass moves the dates of the two days it changed alone.
    before = {day: log.latest(day * DAY, (day + 1) * DAY) for day in range(first, now // DAY)}
    t = now + H
    touched = {(t - d * DAY - H) // DAY for d in retentions}
    log.add(touched, t)
    log.fold(rr.keep_from_day(retentions, t) or 0)
    moved = {day for day in before if log.latest(day * DAY, (day + 1) * DAY) != before[day]}
    assert moved == touched


@pytest.mark.parametrize("bad", [
    '{"d":[[20000,1e999]],"f":null}', '{"d":[[20000,Infinity]],"f":null}', '{"d":[[20000,NaN]],"f":null}',
    "x\u00b2", "\u00b2\u00b3", '{"d":[[1,2]],"f":null', '{"d":[[20000,"1795262400"]],"f":null}',
    '{"d":[[20000,%s]],"f":null}' % ("9" * 400), '{"d":[],"f":[1e999,1]}', '{"d":[[1,2,3]],"f":null}',
    '{"d":[[true,1]],"f":null}', "[" * 100000, "null", '{"d":{"1":2},"f":null}',
])
def test_a_damaged_value_never_raises_and_dates_every_day_later(bad: str) -> None:
    """Review M3: a value json reads but int() cannot (1e999, Infinity: OverflowError) or non-ASCII digits
    ('²': ValueError) raised, so every CSV range answered 500 and every retention pass failed."""
    log = rr.decode(bad)
    assert log.latest(0, DAY) == rr.DAMAGED_AT and log.latest(30000 * DAY, 30001 * DAY) == rr.DAMAGED_AT
    assert float(rr.DAMAGED_AT) == rr.DAMAGED_AT  # exact as a float: published_at/min(Date) take it


def test_recording_over_a_damaged_value_dates_every_day_up_to_then_by_then() -> None:
    import sqlite3

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES (?, ?)", (rr.META_KEY, '{"d":[[20000,1e999]],"f":null}'))
    at = 20500 * DAY + 1800
    rr.record(conn, {20100}, at, keep_from=20050)
    log = rr.decode(conn.execute("SELECT value FROM meta").fetchone()[0])
    assert log.floor_day == 20500 and log.floor_at == at  # every day up to the removal: no earlier date
    assert log.latest(20100 * DAY, 20101 * DAY) == at and log.latest(30000 * DAY, 30001 * DAY) is None
    assert rr.decode(None).latest(0, 10 * DAY) is None
