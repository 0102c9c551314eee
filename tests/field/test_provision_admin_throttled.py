"""``civicedge provision --gateway`` against a gateway throttling admin calls (429 ``admin_throttled`` with
``Retry-After``): the registrar waits as told a few times, saying so, then fails with a message that says the
gateway throttles admin calls and why it may. Before: the first 429 was "the gateway answered HTTP 429: ...".
"""

from __future__ import annotations

import asyncio
import time

import pytest
from test_admin_api_registrar import TOKEN, gateway_url  # noqa: F401 - gateway_url: a fixture
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.registry import Registry
from gateway.web.admin_throttle import FREE_WRONG_TOKENS
from hil.field.errors import GatewayRegistrationError
from hil.field.identity import new_identity
from hil.field.registration import THROTTLED_RETRIES, THROTTLED_WAIT_S, AdminApiRegistrar, Registration

pytestmark = pytest.mark.timeout(60)
WRONG = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


async def _pause_this_machine(url: str) -> None:
    """Wrong tokens from this machine until the gateway pauses it (its next call gets 429, Retry-After 1)."""
    wrong = AdminApiRegistrar(url, WRONG)
    ident = new_identity(device_id="sl-9", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    for _ in range(FREE_WRONG_TOKENS):
        with pytest.raises(GatewayRegistrationError, match="refused the admin token"):
            await asyncio.to_thread(wrong, ident, False)


async def test_a_throttled_registration_waits_as_told_and_then_succeeds(gateway_url: tuple[str, Registry]) -> None:
    url, registry = gateway_url
    await _pause_this_machine(url)
    lines: list[str] = []
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        time.sleep(s)

    registrar = AdminApiRegistrar(url, TOKEN, progress=lines.append, sleep=sleep)
    ident = new_identity(device_id="sl-7", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    assert await asyncio.to_thread(registrar, ident, False) is Registration.ADDED
    assert registry.key("sl-7") == ident.key
    assert slept == [1]
    assert lines == [f"the gateway at {url} is throttling admin calls (HTTP 429 admin_throttled); trying again in 1 s"
                     f" (2 of at most {THROTTLED_RETRIES + 1} tries)"]


async def test_a_gateway_that_keeps_throttling_is_named_as_such(gateway_url: tuple[str, Registry]) -> None:
    url, registry = gateway_url
    await _pause_this_machine(url)
    lines: list[str] = []
    slept: list[float] = []
    registrar = AdminApiRegistrar(url, TOKEN, progress=lines.append, sleep=slept.append)  # no time passes
    ident = new_identity(device_id="sl-7", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    with pytest.raises(GatewayRegistrationError) as err:
        await asyncio.to_thread(registrar, ident, False)
    assert err.value.details["reason"] == "admin_throttled"
    text = str(err.value)
    assert f"the gateway at {url} is throttling admin calls (429 admin_throttled, {THROTTLED_RETRIES + 1} tries" \
           " over 3 s; it did not check the token)" in text
    for why in ("5 wrong admin tokens in a row", "NAT", "trusted_proxies", "someone may be guessing",
                "--token-file", "admin_networks"):
        assert why in text
    assert TOKEN not in text
    assert slept == [1] * THROTTLED_RETRIES and len(lines) == THROTTLED_RETRIES
    assert not registry.key_path("sl-7").exists()  # nothing registered


async def test_the_total_wait_is_bounded_and_a_proxys_429_is_told_apart() -> None:
    """A long Retry-After is not waited past THROTTLED_WAIT_S in all; a 429 that is not the gateway's JSON
    (a rate-limiting proxy) is named as a proxy's."""
    calls: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.path)
        if request.path.startswith("/proxy/"):
            return web.Response(status=429, text="slow down", headers={"Retry-After": "2"})
        return web.json_response({"error": {"code": "admin_throttled", "message": "paused"}}, status=429,
                                 headers={"Retry-After": "40"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        base = f"http://127.0.0.1:{server.port}"
        slept: list[float] = []
        ident = new_identity(device_id="sl-7", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
        registrar = AdminApiRegistrar(base, TOKEN, progress=lambda _: None, sleep=slept.append)
        with pytest.raises(GatewayRegistrationError, match=r"throttling admin calls \(429 admin_throttled, 2 tries "
                           r"over 40 s; it did not check the token\): paused\."):
            await asyncio.to_thread(registrar, ident, False)
        assert slept == [40] and sum(slept) <= THROTTLED_WAIT_S
        slept.clear()
        proxied = AdminApiRegistrar(base + "/proxy", TOKEN, progress=lambda _: None, sleep=slept.append)
        with pytest.raises(GatewayRegistrationError, match=r"answered HTTP 429 \(too many requests\) to 4 tries over"
                           r" 6 s; a proxy in front of the gateway limits requests") as err:
            await asyncio.to_thread(proxied, ident, False)
        assert err.value.details["reason"] == "too_many_requests"
        assert slept == [2, 2, 2]
    finally:
        await server.close()
