"""Bad requests to the Node simulator host (hil/sim/host.mjs) are refused with an error and the host and
its boards go on: a line that is not a JSON object (``null`` crashed the host and every board), an
advance that would spin for hours (``chunk`` 1e-300, ``ms`` 1e12 or 1e308 kept the host at 99 % CPU and
every later request waiting), and clock fields that are not numbers in range (``speed`` "nan" left every
later reply with ``now: null``). Real Node host, real MicroPython board."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from hil.sim.errors import SimHostError
from hil.sim.host import SimHost

pytestmark = pytest.mark.timeout(120)

TICKER = """
import asyncio
async def tick():
    n = 0
    while True:
        await asyncio.sleep(1)
        n += 1
        print('TICK', n)
asyncio.create_task(tick())
"""
DAY_MS = 86_400_000


async def raw_request(host: SimHost, text: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """Send one request line as written (``1e309`` is Infinity to the host; Python's json cannot write it)
    with a fresh rid in place of ``RID``, and return its reply."""
    host._rid += 1
    rid = host._rid
    fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    host._pending[rid] = fut
    try:
        assert host.proc is not None and host.proc.stdin is not None
        host.proc.stdin.write(text.replace("RID", str(rid)).encode() + b"\n")
        return await asyncio.wait_for(fut, timeout_s)
    finally:
        host._pending.pop(rid, None)


async def test_a_request_that_is_not_an_object_gets_an_error_and_the_host_goes_on(make_board) -> None:
    board = await make_board(files={"main.py": TICKER})
    host = board.host
    await host.advance(1000)
    await board.wait_console("TICK 1")
    errors: list[dict[str, Any]] = []
    host.on_event("error", errors.append)
    assert host.proc is not None and host.proc.stdin is not None
    for line in (b"null", b"1", b'"advance"', b"[]", b"true"):
        host.proc.stdin.write(line + b"\n")
    reply = await host.request({"op": "ping"}, timeout_s=10)  # was: the host had exited
    assert reply["boards"] == 1
    assert [e["error"] for e in errors] == [f"request is not a JSON object: {t}" for t in
                                            ("null", "1", '"advance"', "[]", "true")]
    state = await board.state()
    assert state["state"] == "running"
    await host.advance(2000)
    await board.wait_console("TICK 3")  # the board runs on


@pytest.mark.parametrize("bad, fragment", [
    ('{"op":"advance","ms":1000,"chunk":1e-300,"rid":RID}', '"chunk" >= 1 ms'),
    ('{"op":"advance","ms":1e12,"chunk":1,"rid":RID}', "at most 31622400000 (366 days)"),
    ('{"op":"advance","ms":1e308,"chunk":1000,"rid":RID}', "at most 31622400000"),
    ('{"op":"advance","ms":31622400001,"chunk":86400000,"rid":RID}', "at most 31622400000"),
    ('{"op":"advance","ms":31622400000,"chunk":1,"rid":RID}', 'chunks, at most 10000000: use a "chunk" of at least 3163 ms'),
    ('{"op":"advance","ms":1e309,"chunk":1000,"rid":RID}', '"ms" must be a number'),
])
async def test_an_advance_that_would_spin_for_hours_is_refused_at_once(make_board, bad: str, fragment: str) -> None:
    board = await make_board(files={"main.py": TICKER})
    host = board.host
    before = (await host.ping())["now"]
    t = time.monotonic()
    reply = await raw_request(host, bad)  # was: no answer, the host busy at 99 % CPU
    assert fragment in reply.get("error", ""), reply
    assert time.monotonic() - t < 5
    assert (await host.ping())["now"] == before  # the clock did not move
    # The limits themselves are allowed: 366 days in chunks of a day, 1 ms chunks.
    assert await host.advance(5, chunk_ms=1) == before + 5


async def test_the_longest_advance_is_taken(make_board) -> None:
    board = await make_board()  # no firmware timers: the chunks alone
    before = (await board.host.ping())["now"]
    assert await board.host.advance(366 * DAY_MS, chunk_ms=DAY_MS, timeout_s=60) == before + 366 * DAY_MS


async def test_clock_fields_are_checked_before_any_is_applied(make_board) -> None:
    board = await make_board(files={"main.py": TICKER})
    host = board.host
    before = {k: v for k, v in (await host.request({"op": "clock"})).items() if k != "rid"}
    assert before["speed"] == -1  # started paused (host.py passes --speed -1)
    bad = [
        '{"op":"clock","speed":"nan","rid":RID}',
        '{"op":"clock","speed":1e309,"rid":RID}',
        '{"op":"clock","speed":-1e309,"rid":RID}',
        '{"op":"clock","speed":1e7,"rid":RID}',
        '{"op":"clock","speed":null,"rid":RID}',  # was: Number(null), 0: as fast as possible
        '{"op":"clock","speed":true,"rid":RID}',
        '{"op":"clock","speed":"2","rid":RID}',
        '{"op":"clock","hold_at":"abc","rid":RID}',
        '{"op":"clock","hold_at":1e309,"rid":RID}',
        '{"op":"clock","hold_at":-1,"rid":RID}',
        '{"op":"clock","hold_at":true,"rid":RID}',
        '{"op":"clock","speed":0,"hold_at":"abc","rid":RID}',  # a good field beside a bad one: neither applied
        '{"op":"clock","hold_at":5,"speed":"fast","rid":RID}',
    ]
    for line in bad:
        reply = await raw_request(host, line)
        assert "error" in reply and ('"speed"' in reply["error"] or '"hold_at"' in reply["error"]), (line, reply)
        after = {k: v for k, v in (await host.request({"op": "clock"})).items() if k != "rid"}
        assert after == before, line  # nothing applied; now a number, never null
    # The valid modes: paused (< 0), as fast as possible (0), a rate, a hold and lifting it.
    for fields in ({"speed": 0}, {"speed": 1e6}, {"speed": 2.5, "hold_at": before["now"] + 1000},
                   {"hold_at": None}, {"speed": -1}):
        reply = await host.request({"op": "clock", **fields})
        assert all(reply[k] == v for k, v in fields.items()), (fields, reply)
        assert isinstance(reply["now"], int)
    with pytest.raises(SimHostError, match='"speed" must be a number'):
        await host.request({"op": "clock", "speed": "nan"})
