"""``civicedge provision --gateway``: the admin-API registrar against the gateway's real web app
(aiohttp on a loopback port, a real registry), and how each refusal reads for a technician."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.web.app import create_app
from hil.field.errors import GatewayRegistrationError
from hil.field.identity import new_identity
from hil.field.registration import AdminApiRegistrar, Registration

TOKEN = "registrar-test-token-0123456789"


@pytest.fixture
async def gateway_url(tmp_path: Path) -> AsyncIterator[tuple[str, Registry]]:
    registry = Registry(tmp_path / "registry")
    app = create_app(store=None, registry=registry, policy=load_policy(), metrics_registry=None, admin_token=TOKEN)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}", registry
    finally:
        await server.close()
        registry.close()


async def test_registers_then_explains_each_refusal(gateway_url: tuple[str, Registry]) -> None:
    url, registry = gateway_url
    registrar = AdminApiRegistrar(url + "/", TOKEN)
    assert not registrar.plain_http_remote
    ident = new_identity(device_id="sl-7", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    assert await asyncio.to_thread(registrar, ident, False) is Registration.ADDED
    assert registry.key("sl-7") == ident.key
    assert await asyncio.to_thread(registrar, ident, False) is Registration.UNCHANGED

    rekeyed = new_identity(device_id="sl-7", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    with pytest.raises(GatewayRegistrationError, match="pass --take-over") as err:
        await asyncio.to_thread(registrar, rekeyed, False)
    assert rekeyed.key.hex() not in str(err.value)
    assert await asyncio.to_thread(registrar, rekeyed, True) is Registration.REPLACED
    assert registry.key("sl-7") == rekeyed.key

    moved = new_identity(device_id="sl-7", kind="streetlight", zone="north", lat="52.1", lon="4.2")
    with pytest.raises(GatewayRegistrationError, match="cannot move"):
        await asyncio.to_thread(registrar, moved, True)
    with pytest.raises(GatewayRegistrationError, match="refused the admin token"):
        await asyncio.to_thread(AdminApiRegistrar(url, "wrong-token-000000000000"), ident, True)
    assert registry.key("sl-7") == rekeyed.key


async def test_unreachable_gateway_and_bad_urls_are_clear() -> None:
    ident = new_identity(device_id="sl-7", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    with pytest.raises(GatewayRegistrationError, match="cannot reach the gateway"):
        await asyncio.to_thread(AdminApiRegistrar("http://127.0.0.1:9", TOKEN, timeout_s=3), ident, False)
    for bad in ("gateway.local:8080", "ftp://gw", "http://"):
        with pytest.raises(GatewayRegistrationError, match="must look like"):
            AdminApiRegistrar(bad, TOKEN)
    assert AdminApiRegistrar("http://gateway.local:8080", TOKEN).plain_http_remote
    assert not AdminApiRegistrar("https://gateway.local", TOKEN).plain_http_remote
    assert not AdminApiRegistrar("http://[::1]:8080", TOKEN).plain_http_remote
