"""LogLimiter: one line per interval for bursty events, with the count of those left out."""

from __future__ import annotations

from gateway.log_limit import LogLimiter, more_since


def test_one_line_per_interval_with_the_count_left_out() -> None:
    now = [100.0]
    limiter = LogLimiter(10.0, lambda: now[0])
    assert limiter.allow() == 0  # the first event is logged
    assert [limiter.allow() for _ in range(3)] == [None, None, None]
    now[0] += 9.9
    assert limiter.allow() is None
    now[0] += 0.1
    assert limiter.allow() == 4  # logged again, naming the four left out
    assert limiter.allow() is None
    limiter.reset()  # the burst is over: the next event is logged at once, nothing carried over
    assert limiter.allow() == 0


def test_more_since_wording() -> None:
    assert more_since(0, "pause(s)") == ""
    assert more_since(3, "pause(s)") == " (3 more pause(s) since the last such line)"
