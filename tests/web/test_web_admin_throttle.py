"""Wrong admin tokens are throttled (gateway.web.admin_throttle): a security audit guessed ~2,700 tokens a second
with one log line per 10 s. After a few wrong tokens a client gets 429 ``admin_throttled`` with a doubling
``Retry-After`` (capped) and its token is not compared meanwhile (a right one is refused too, so a 429 says
nothing); past a global budget every client not known good is refused, while the operator's own client keeps
working. Over a real aiohttp server behind a trusted proxy (the clients are the X-Forwarded-For addresses), with an
injected clock: no bound depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from typing import AsyncIterator
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from .support import ADMIN_TOKEN, NOW, Fleet, admin_headers
from gateway.resources import load_policy
from gateway.web.admin_throttle import (
    FORGET_AFTER_S,
    FREE_WRONG_TOKENS,
    GLOBAL_BURST,
    GLOBAL_WRONG_PER_S,
    KNOWN_GOOD_S,
    MAX_CLIENTS,
    MAX_KNOWN_GOOD,
    MAX_PAUSE_S,
    RESERVE_BURST,
    RESERVE_PER_S,
    AdminThrottle,
    Refusal,
)
from gateway.web.app import create_app
from gateway.web.auth import AdminThrottled, AdminToken, throttle_client
from gateway.web.context import CONTEXT_KEY
from gateway.web.errors import Unauthorized

pytestmark = pytest.mark.timeout(60)
WRONG = "f0e1d2c3b4a5968778695a4b3c2d1e0f"  # a wrong guess: distinctive, never in a log line
PATH = "/api/admin/retention"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def proxied(fleet: Fleet, clock: Clock) -> AsyncIterator[TestClient]:
    """The app behind a trusted proxy at 127.0.0.1 (each request names its client in X-Forwarded-For), its admin
    token checked on ``clock``."""
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=lambda: float(NOW), trusted_proxies=["127.0.0.1"])
    app[CONTEXT_KEY] = dataclasses.replace(app[CONTEXT_KEY], token=AdminToken(ADMIN_TOKEN, clock))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        yield c


async def _call(client: TestClient, who: str, token: str | None) -> tuple[int, str, str | None]:
    """(status, error code or "", Retry-After) of an admin GET from client ``who`` with ``token``."""
    headers = {"X-Forwarded-For": who}
    if token is not None:
        headers.update(admin_headers(token))
    async with client.get(PATH, headers=headers) as resp:
        body = await resp.json()
        code = body["error"]["code"] if resp.status >= 400 else ""
        return resp.status, code, resp.headers.get("Retry-After")


def _throttled(client: TestClient) -> dict[str, float]:
    """civicedge_admin_throttled_total by scope, as /metrics would serve it."""
    registry = client.app[CONTEXT_KEY].metrics_registry
    return {s.labels["scope"]: s.value for m in registry.collect() if m.name == "civicedge_admin_throttled"
            for s in m.samples if s.name.endswith("_total")}


async def test_a_client_sending_wrong_tokens_is_paused_twice_as_long_each_time_up_to_a_minute(
        proxied: TestClient, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """Before: every wrong token was compared and answered 401 at once (the audit's 2,700 a second)."""
    caplog.set_level(logging.DEBUG)
    guesser = "203.0.113.9"
    for _ in range(FREE_WRONG_TOKENS):
        assert await _call(proxied, guesser, WRONG) == (401, "wrong_token", None)
    # Paused: not even the right token is compared, so the answer tells a guess nothing.
    assert await _call(proxied, guesser, ADMIN_TOKEN) == (429, "admin_throttled", "1")
    assert await _call(proxied, guesser, None) == (429, "admin_throttled", "1")
    pauses = []
    for _ in range(9):
        status, _, retry = await _call(proxied, guesser, WRONG)
        assert status == 429
        clock.now += float(retry or "nan")  # the client waits as told ...
        assert await _call(proxied, guesser, WRONG) == (401, "wrong_token", None)  # ... and one guess is compared
        pauses.append(int((await _call(proxied, guesser, WRONG))[2] or 0))
    assert pauses == [2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert MAX_PAUSE_S == 60
    # Half-way through a pause: Retry-After says what is left.
    clock.now += 20.5
    assert await _call(proxied, guesser, ADMIN_TOKEN) == (429, "admin_throttled", "40")
    clock.now += 40
    assert await _call(proxied, guesser, ADMIN_TOKEN) == (200, "", None)  # the right token ends it ...
    assert await _call(proxied, guesser, WRONG) == (401, "wrong_token", None)  # ... and the count starts afresh
    assert _throttled(proxied)["client"] == 2 + 2 * 9 + 1
    assert _throttled(proxied)["global"] == 0
    # One WARNING line for the throttled calls of these 10 s (counting the rest later), never a token.
    lines = [r.getMessage() for r in caplog.records if "admin_throttled" in r.getMessage()]
    assert lines and all(r.levelno == logging.WARNING for r in caplog.records if "admin_throttled" in r.getMessage())
    assert re.search(r"refused an admin call from 203\.0\.113\.9 via proxy 127\.0\.0\.1 to GET '/api/admin/retention':"
                     r" admin_throttled \(5 wrong admin tokens in a row from this client", lines[0]), lines[0]
    assert WRONG not in caplog.text and ADMIN_TOKEN not in caplog.text


async def test_the_operator_elsewhere_is_not_slowed_by_a_guesser_being_throttled(
        proxied: TestClient, clock: Clock) -> None:
    guesser, operator = "203.0.113.9", "198.51.100.7"
    assert await _call(proxied, operator, ADMIN_TOKEN) == (200, "", None)
    assert _throttled(proxied) == {"client": 0, "global": 0}  # the series is there from the first admin call
    for _ in range(FREE_WRONG_TOKENS):
        await _call(proxied, guesser, WRONG)
    assert (await _call(proxied, guesser, ADMIN_TOKEN))[0] == 429
    assert await _call(proxied, operator, ADMIN_TOKEN) == (200, "", None)
    assert await _call(proxied, operator, WRONG) == (401, "wrong_token", None)  # a typo of the operator's own
    assert await _call(proxied, operator, ADMIN_TOKEN) == (200, "", None)


async def test_a_guesser_spread_over_many_addresses_is_held_to_the_global_budget_but_the_operator_is_not(
        proxied: TestClient, clock: Clock) -> None:
    operator = "198.51.100.7"
    assert await _call(proxied, operator, ADMIN_TOKEN) == (200, "", None)  # the operator's client is known good
    compared = 0
    for i in range(200):  # one wrong token from each of 200 addresses of one /24, at one instant
        status, code, retry = await _call(proxied, "203.0.113.%d" % (i + 1), WRONG)
        if status == 401:
            compared += 1
        else:
            assert (status, code, retry) == (429, "admin_throttled", "1")
    assert compared == GLOBAL_BURST - RESERVE_BURST  # the rest is kept for other networks
    # A new client of the guesser's network is refused unchecked, whatever its token ...
    assert await _call(proxied, "203.0.113.244", ADMIN_TOKEN) == (429, "admin_throttled", "1")
    # ... one of another network is checked (the reserve), as is the operator's known-good one.
    assert await _call(proxied, "192.0.2.44", ADMIN_TOKEN) == (200, "", None)
    assert await _call(proxied, operator, ADMIN_TOKEN) == (200, "", None)
    assert await _call(proxied, operator, WRONG) == (401, "wrong_token", None)
    assert _throttled(proxied)["global"] == 200 - compared + 1
    # A second later the budget has GLOBAL_WRONG_PER_S more compares, all told.
    clock.now += 1.0
    compared = sum([(await _call(proxied, "192.0.%d.9" % (i + 100), WRONG))[0] == 401 for i in range(30)])
    # the shared part's second, and the reserve (refilled at RESERVE_PER_S to its burst: the operator's typo drew one)
    assert compared == GLOBAL_WRONG_PER_S - RESERVE_PER_S + RESERVE_BURST
    clock.now += 1.0
    assert await _call(proxied, "203.0.113.244", ADMIN_TOKEN) == (200, "", None)


async def test_ipv6_clients_are_counted_by_their_64(proxied: TestClient) -> None:
    """One machine picks its addresses from a /64: a new address per guess must not be a new client."""
    for i in range(FREE_WRONG_TOKENS):
        assert (await _call(proxied, "2001:db8:1:2::%x" % (i + 1), WRONG))[0] == 401
    assert (await _call(proxied, "2001:db8:1:2:ffff::9", ADMIN_TOKEN))[0] == 429
    assert (await _call(proxied, "2001:db8:1:3::1", ADMIN_TOKEN))[0] == 200  # another /64


async def test_a_client_idle_long_enough_starts_afresh(proxied: TestClient, clock: Clock) -> None:
    guesser = "203.0.113.9"
    for _ in range(FREE_WRONG_TOKENS):
        await _call(proxied, guesser, WRONG)
    clock.now += FORGET_AFTER_S
    for _ in range(FREE_WRONG_TOKENS):
        assert (await _call(proxied, guesser, WRONG))[0] == 401
    assert (await _call(proxied, guesser, WRONG))[0] == 429


async def test_a_throttled_call_gets_no_100_continue_for_the_right_token(proxied: TestClient) -> None:
    """``Expect: 100-continue`` is decided before the handler: a 100 to the right token (and none to a wrong one)
    would answer the guess while the client is throttled."""
    guesser = "203.0.113.9"
    for _ in range(FREE_WRONG_TOKENS):
        await _call(proxied, guesser, WRONG)
    assert proxied.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", proxied.port)
    try:
        writer.write(("PUT %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nX-Forwarded-For: %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
                      % (PATH, ADMIN_TOKEN, guesser)).encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 429"), status_line


def test_the_clients_tracked_are_capped() -> None:
    clock = Clock()
    throttle = AdminThrottle(clock)
    for i in range(MAX_CLIENTS + 500):
        throttle.wrong("client-%d" % i)
        clock.now += 0.001
    assert throttle.tracked() == MAX_CLIENTS


# --- Gaps a reviewer's mutants showed (each test below fails with one mutant of admin_throttle applied) ---


async def test_the_right_token_clears_the_clients_count_of_wrong_ones(proxied: TestClient) -> None:
    """Mutant killed: right() keeping the client's count (its next wrong token would start a pause at once)."""
    operator = "198.51.100.7"
    for _ in range(FREE_WRONG_TOKENS - 1):
        assert await _call(proxied, operator, WRONG) == (401, "wrong_token", None)
    assert await _call(proxied, operator, ADMIN_TOKEN) == (200, "", None)
    for _ in range(FREE_WRONG_TOKENS):  # a fresh count: every one of these is compared
        assert await _call(proxied, operator, WRONG) == (401, "wrong_token", None)
    assert await _call(proxied, operator, ADMIN_TOKEN) == (429, "admin_throttled", "1")  # the first pause, 1 s


async def _use_up_the_global_budget(client: TestClient) -> None:
    """Wrong tokens from new networks, one each, until the global budget, its reserve for quiet networks
    included, refuses them (at one instant)."""
    for i in range(int(GLOBAL_BURST)):
        assert await _call(client, "203.0.%d.9" % (i + 1), WRONG) == (401, "wrong_token", None)
    assert await _call(client, "203.0.250.9", WRONG) == (429, "admin_throttled", "1")


async def test_a_known_good_client_is_known_good_for_a_day_only(proxied: TestClient, clock: Clock) -> None:
    """Mutant killed: known-good status that never expires."""
    operator = "198.51.100.7"
    assert await _call(proxied, operator, ADMIN_TOKEN) == (200, "", None)
    clock.now += KNOWN_GOOD_S - 1
    await _use_up_the_global_budget(proxied)
    assert await _call(proxied, operator, ADMIN_TOKEN) == (200, "", None)  # within the day: still checked
    clock.now += KNOWN_GOOD_S + 10
    await _use_up_the_global_budget(proxied)
    assert await _call(proxied, operator, ADMIN_TOKEN) == (429, "admin_throttled", "1")  # a day on: a new client


def test_the_known_good_clients_are_capped_oldest_first() -> None:
    """Mutant killed: a known-good list without its :data:`MAX_KNOWN_GOOD` cap."""
    clock = Clock()
    throttle = AdminThrottle(clock)
    for i in range(MAX_KNOWN_GOOD + 1):
        throttle.right("good-%d" % i)
    for i in range(int(GLOBAL_BURST)):  # each its own network: the reserve is spent too
        throttle.wrong("guess-%d" % i)
    assert throttle.refusal("new") == Refusal("global", 1, 0)
    assert throttle.refusal("good-0") == Refusal("global", 1, 0)  # the oldest was let go for the newest
    assert throttle.refusal("good-1") is None
    assert throttle.refusal("good-%d" % MAX_KNOWN_GOOD) is None


async def test_a_known_good_client_still_gets_its_own_pause(proxied: TestClient) -> None:
    """Mutant killed: known-good clients skipping their own per-client pause (a leaked day-old address of the
    operator's would otherwise guess unthrottled)."""
    operator = "198.51.100.7"
    assert await _call(proxied, operator, ADMIN_TOKEN) == (200, "", None)
    for _ in range(FREE_WRONG_TOKENS):
        assert await _call(proxied, operator, WRONG) == (401, "wrong_token", None)
    assert await _call(proxied, operator, ADMIN_TOKEN) == (429, "admin_throttled", "1")


@pytest.fixture
async def direct(fleet: Fleet, clock: Clock) -> AsyncIterator[TestClient]:
    """The app with no trusted proxy: every request's client is its peer, 127.0.0.1."""
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=lambda: float(NOW))
    app[CONTEXT_KEY] = dataclasses.replace(app[CONTEXT_KEY], token=AdminToken(ADMIN_TOKEN, clock))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        yield c


async def test_without_a_trusted_proxy_the_peer_is_the_client_whatever_x_forwarded_for_says(
        direct: TestClient) -> None:
    """A guesser naming a new address per guess in X-Forwarded-For is still one client (its peer address)."""
    for i in range(FREE_WRONG_TOKENS):
        assert await _call(direct, "203.0.113.%d" % (i + 1), WRONG) == (401, "wrong_token", None)
    assert await _call(direct, "192.0.2.99", ADMIN_TOKEN) == (429, "admin_throttled", "1")


def _peer_request(peer: tuple[object, ...], token: str) -> web.Request:
    """An admin request from socket peer ``peer`` (no trusted proxy), as a dual-stack listener names it."""
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: peer if name == "peername" else default
    return make_mocked_request("GET", PATH, headers=admin_headers(token), transport=transport, app=web.Application())


def test_an_ipv4_peer_on_a_dual_stack_socket_is_its_ipv4_address() -> None:
    """``::ffff:203.0.113.9`` (an IPv4 peer of a ``::`` listener) is the client 203.0.113.9, not a /64 of
    IPv4-mapped space that every IPv4 client would share; its wrong tokens count with the plain form's."""
    mapped = ("::ffff:203.0.113.9", 40000, 0, 0)
    assert throttle_client(_peer_request(mapped, WRONG)) == "203.0.113.9"
    assert throttle_client(_peer_request(("::ffff:203.0.113.10", 40000, 0, 0), WRONG)) == "203.0.113.10"
    token = AdminToken(ADMIN_TOKEN, Clock())
    for i in range(FREE_WRONG_TOKENS):
        peer = mapped if i % 2 else ("203.0.113.9", 40000)
        with pytest.raises(Unauthorized):
            token.check(_peer_request(peer, WRONG))
    with pytest.raises(AdminThrottled):
        token.check(_peer_request(mapped, ADMIN_TOKEN))
    token.check(_peer_request(("::ffff:203.0.113.10", 40000, 0, 0), ADMIN_TOKEN))  # its neighbour is not paused
