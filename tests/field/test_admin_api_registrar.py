"""``civicedge provision --gateway``: the admin-API registrar against the gateway's real web app
(aiohttp on a loopback port, a real registry), and how each refusal reads for a technician."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.web.app import create_app
from hil.field.errors import GatewayRegistrationError
from hil.field.identity import new_identity
from hil.field.registration import AdminApiRegistrar, Registration

TOKEN = "b12b3d3f466f6881acc7d2d6f584f3bb"


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


async def _serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    return server


async def test_admin_api_switched_off_and_404s_read_for_what_they_are(tmp_path: Path) -> None:
    # QA: a gateway without an admin token said "refused the admin token (admin_disabled)", and every
    # 404 (any web server) read as "an older version?".
    ident = new_identity(device_id="sl-7", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    registry = Registry(tmp_path / "registry")
    off = await _serve(create_app(store=None, registry=registry, policy=load_policy(), metrics_registry=None,
                                  admin_token=None))

    async def gateway_404(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "not_found", "message": "no such route"}}, status=404)

    older = web.Application()
    older.router.add_route("*", "/{tail:.*}", gateway_404)
    older_server, other_server = await _serve(older), await _serve(web.Application())
    try:
        with pytest.raises(GatewayRegistrationError) as disabled:
            await asyncio.to_thread(AdminApiRegistrar(f"http://127.0.0.1:{off.port}", TOKEN), ident, False)
        assert "has its admin API switched off" in str(disabled.value)
        assert "set [http] admin_token_file in the gateway config" in str(disabled.value)
        assert "refused the admin token" not in str(disabled.value)
        with pytest.raises(GatewayRegistrationError, match=r"no device enrollment endpoint \(HTTP 404; an older"):
            await asyncio.to_thread(AdminApiRegistrar(f"http://127.0.0.1:{older_server.port}", TOKEN), ident, False)
        with pytest.raises(GatewayRegistrationError, match="HTTP 404 and does not look like a civicedge gateway") as no:
            await asyncio.to_thread(AdminApiRegistrar(f"http://127.0.0.1:{other_server.port}", TOKEN), ident, False)
        assert "older" not in str(no.value)
    finally:
        for server in (off, older_server, other_server):
            await server.close()
        registry.close()


async def test_a_two_line_token_file_sends_its_first_line(gateway_url: tuple[str, Registry], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # QA: a token file of two lines made urllib refuse the header ("Invalid header value") and the
    # tool said the gateway "answered something that is not JSON" although nothing was sent.
    from hil.cli.main import main as civicedge_main
    from hil.field.provision_cmd import _admin_token

    url, registry = gateway_url
    two = tmp_path / "two.token"
    two.write_text(f"{TOKEN}\nsecond line\n")
    two.chmod(0o600)  # owner-only, as the gateway wants it (else a warning, which is not this test's subject)
    token = _admin_token(two)
    assert token == TOKEN
    ident = new_identity(device_id="sl-8", kind="streetlight", zone="centre", lat="52.1", lon="4.2")
    assert await asyncio.to_thread(AdminApiRegistrar(url, token), ident, False) is Registration.ADDED
    with pytest.raises(GatewayRegistrationError, match="the admin token cannot be sent"):
        await asyncio.to_thread(AdminApiRegistrar(url, f"{TOKEN}\nx"), ident, False)

    blank_first = tmp_path / "blank.token"
    blank_first.write_text(f"\n{TOKEN}\n")
    rc = await asyncio.to_thread(civicedge_main, [
        "provision", "--port", "/dev/ttyUSB-civicedge-missing", "--id", "sl-9", "--zone", "centre",
        "--location", "52.1,4.2", "--gateway", url, "--token-file", str(blank_first)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: the admin token file {blank_first} has an empty first line; put the "
                                      "gateway's admin token on its first line"), err
