"""The log of when retention removed values, per UTC day of period start (gateway.storage.retention_removals):
a range is dated by the latest removal of the days it reads, the oldest days fold into a floor that only makes
dates later, and a value that cannot be read dates every day by the latest time it may name."""

from __future__ import annotations

from gateway.storage import retention_removals as rr

DAY = rr.DAY_S


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


def test_the_oldest_days_fold_into_a_floor_that_never_dates_earlier() -> None:
    log = rr.RemovalLog()
    for day in range(rr.MAX_DAYS + 5):
        log.add({day}, 5000 - day)  # older days removed later (a longer retention of another field)
    assert len(log.days) == rr.MAX_DAYS and log.floor_day == 4 and log.floor_at == 5000
    for day in range(rr.MAX_DAYS + 5):
        got = log.latest(day * DAY, (day + 1) * DAY)
        assert got is not None and got >= 5000 - day  # never earlier than what was recorded
    log.add({2}, 9000)  # a removal inside the floor moves the floor's time
    assert log.floor_at == 9000 and log.latest(0, DAY) == 9000
    assert log.latest(100 * DAY, 101 * DAY) == 5000 - 100  # a day kept apart keeps its own time


def test_an_unreadable_value_dates_every_day_by_the_latest_time_it_names() -> None:
    log = rr.decode('{"d": [[20000, 1795262400]], "f": ')  # cut short
    assert log.latest(0, DAY) == 1795262400 and log.latest(30000 * DAY, 30001 * DAY) == 1795262400
    assert rr.decode(None).latest(0, 10 * DAY) is None
