"""Behind ``--gateway`` a refused identity write puts the previous registration back in one compare-and-
swap request (``PUT`` with ``expect_key_sha256``): a take-over or key rotation made meanwhile is kept
(review M2); an older gateway refuses the field and nothing is put back; a gateway that cannot say
whether it holds the id is not asked by registering anything (L3); an id revoked or retired meanwhile
is said so, without take-over advice (L4). Against the real web app over a real registry; only the
board is a stand-in (its answers after a failed write)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportStore
from gateway.web import admin_api
from gateway.web.app import create_app
from hil.field.errors import DeviceIOError, FieldError, GatewayRegistrationError
from hil.field.identity import Identity, new_identity
from hil.field.provision_cmd import _provision_stopped
from hil.field.provision_write import PART_PATH, gateway_holds_own_key, restore_through, undo_failed_write
from hil.field.registration import AdminApiRegistrar, Registration

TOKEN = "bd5bdbc89178fdb3db9e380a32819eab"
FIELDS = dict(kind="streetlight", zone="centre", lat="52.37", lon="4.89")


class _Gateway:
    """The real web app over a real registry, served on a free loopback port."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.registry = Registry(data / "registry")
        ReportStore(data / "reports.sqlite", gateway_id="gw-cas").close()
        self.queries = ReportQueries(data / "reports.sqlite")
        self.puts = 0

        @web.middleware
        async def count(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
            if request.method == "PUT":
                self.puts += 1
            return await handler(request)

        app = create_app(store=self.queries, registry=self.registry, policy=load_policy(), metrics_registry=None,
                         admin_token=TOKEN)
        app.middlewares.append(count)
        self.server = TestServer(app, host="127.0.0.1", port=0)

    def key(self, device_id: str) -> bytes | None:
        reg = Registry(self.data / "registry", create=False)  # another connection: what is on disk
        try:
            return reg.key(device_id) if reg.lookup(device_id) is not None else None
        finally:
            reg.close()

    def registrar(self) -> AdminApiRegistrar:
        return AdminApiRegistrar(f"http://127.0.0.1:{self.server.port}", TOKEN)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[_Gateway]:
    gw = _Gateway(tmp_path / "gw")
    await gw.server.start_server()
    try:
        yield gw
    finally:
        await gw.server.close()
        gw.queries.close()
        gw.registry.close()


def _older_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """The enroll endpoint of a gateway from before ``expect_key_sha256``: it refuses the field as any
    unknown body key (the endpoint has refused unknown keys since it was added, 78f3b61)."""
    monkeypatch.setattr(admin_api, "ENROLL_KEYS", tuple(k for k in admin_api.ENROLL_KEYS if k != "expect_key_sha256"))


def _identities() -> tuple[Identity, Identity, Identity]:
    old = new_identity(device_id="sl-1", **FIELDS)
    new, thief = (Identity(id="sl-1", kind=old.kind, zone=old.zone, lat=old.lat, lon=old.lon,
                           key=new_identity(device_id="sl-1", **FIELDS).key) for _ in range(2))
    return old, new, thief


async def test_put_back_in_one_request_only_while_the_new_key_is_held(gateway: _Gateway) -> None:
    old, new, thief = _identities()
    gateway.registry.enroll("sl-1", key=new.key, **FIELDS)  # provision registered the new key
    restore = restore_through(gateway.registrar())
    before = gateway.puts
    await asyncio.to_thread(restore, old, new)
    assert gateway.key("sl-1") == old.key and gateway.puts == before + 1

    # Registered anew, then rotated (the key leaked) before the put-back: the rotation is kept.
    gateway.registry.enroll("sl-1", key=new.key, replace=True, **FIELDS)
    gateway.registry.rotate_key("sl-1", key=thief.key)
    with pytest.raises(GatewayRegistrationError) as err:
        await asyncio.to_thread(restore, old, new)
    assert err.value.details.get("reason") == "conflict" and "changed meanwhile" in str(err.value), err.value
    assert gateway.key("sl-1") == thief.key
    # Deleted meanwhile: never added back.
    with pytest.raises(GatewayRegistrationError) as gone:
        await asyncio.to_thread(restore, Identity(**{**old.__dict__, "id": "sl-2"}),
                                Identity(**{**new.__dict__, "id": "sl-2"}))
    assert gone.value.details.get("reason") == "unknown_device" and gateway.key("sl-2") is None


async def test_an_older_gateway_is_not_put_back_and_the_take_over_advice_stays(
        gateway: _Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new, _ = _identities()
    gateway.registry.enroll("sl-1", key=new.key, **FIELDS)
    _older_gateway(monkeypatch)
    board = _Board(old)
    failed = DeviceIOError("writing /identity.json failed (ENOSPC)", port=board.url)
    error = await asyncio.to_thread(undo_failed_write, board, failed, current=old, wanted=new,  # type: ignore[arg-type]
                                    previous=old, restore=restore_through(gateway.registrar()))
    assert isinstance(error, DeviceIOError)
    assert not error.details.get("registry_restored") and not error.details.get("registry_changed"), error
    assert "was not put back" in str(error) and "still holds the new key" in str(error), error
    assert gateway.key("sl-1") == new.key  # nothing replaced without the compare-and-swap
    with pytest.raises(FieldError) as advice:
        _provision_stopped(_args(), True, error)
    assert "finish it with: civicedge provision" in str(advice.value), advice.value
    assert "--force --take-over" in str(advice.value), advice.value


class _Board:
    """The board's answers after a refused write: it still holds ``current``; no temp file."""

    url = "/dev/ttyFAKE"

    def __init__(self, current: Identity) -> None:
        self.current = current

    def eval_code(self, code: str, *, timeout_s: float = 10.0) -> Any:
        assert PART_PATH in code
        return [len(self.current.to_json_bytes()), -1]

    def read_file(self, path: str, *, timeout_s: float = 30.0, secret: bool = False) -> bytes:
        assert secret
        return self.current.to_json_bytes()

    def exec(self, code: str, *, timeout_s: float = 10.0) -> str:
        raise AssertionError("no temp file to remove")


def _args() -> argparse.Namespace:
    return argparse.Namespace(port="/dev/ttyFAKE", device_id="sl-1", zone="centre", location="52.37,4.89",
                              board=None, registry=None, gateway="http://127.0.0.1:1", token_file=None,
                              force=True, take_over=False, discard_unsent=True)


@pytest.mark.parametrize("end", ["revoke", "retire"])
async def test_an_id_revoked_or_retired_meanwhile_is_said_so_without_take_over_advice(
        gateway: _Gateway, end: str) -> None:
    old, new, _ = _identities()
    gateway.registry.enroll("sl-1", key=new.key, **FIELDS)
    getattr(gateway.registry, end)("sl-1")
    board = _Board(old)
    failed = DeviceIOError("writing /identity.json failed (ENOSPC)", port=board.url)
    error = await asyncio.to_thread(undo_failed_write, board, failed, current=old, wanted=new,  # type: ignore[arg-type]
                                    previous=old, restore=restore_through(gateway.registrar()))
    assert isinstance(error, DeviceIOError)
    state = end + "d"
    assert error.details.get("registry_ended") == state, error
    assert f"sl-1 was {state} meanwhile at the gateway, which is kept: nothing was put back" in str(error)
    assert "failed" not in str(error).split("; ", 1)[1] and "take-over" not in str(error), error
    record = gateway.registry.get("sl-1")
    assert (record.revoked, record.retired) == (end == "revoke", end == "retire")
    assert gateway.key("sl-1") == new.key
    _provision_stopped(_args(), True, error)  # no advice added (a take-over would be refused): returns


async def test_asking_whether_the_gateway_holds_the_boards_key_never_adds_nor_replaces_it(
        gateway: _Gateway) -> None:
    old, new, thief = _identities()
    registrar = gateway.registrar()
    before = gateway.puts
    assert await asyncio.to_thread(gateway_holds_own_key, registrar, new, old) == (True, None)
    assert gateway.key("sl-1") is None  # not registered there: not added by asking
    gateway.registry.enroll("sl-1", key=old.key, **FIELDS)
    assert await asyncio.to_thread(gateway_holds_own_key, registrar, new, old) == (True, old)
    gateway.registry.rotate_key("sl-1", key=thief.key)  # rotated after a leak: another key now
    assert await asyncio.to_thread(gateway_holds_own_key, registrar, new, old) == (False, None)
    assert gateway.key("sl-1") == thief.key and gateway.registry.get("sl-1").key_version == 2
    gateway.registry.revoke("sl-1")
    with pytest.raises(GatewayRegistrationError) as revoked:
        await asyncio.to_thread(gateway_holds_own_key, registrar, new, old)
    assert revoked.value.details.get("reason") == "revoked" and gateway.registry.get("sl-1").revoked
    assert gateway.puts == before + 4  # one request each


async def test_an_older_gateway_that_cannot_say_whether_it_holds_the_id_is_given_nothing(
        gateway: _Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new, _ = _identities()
    _older_gateway(monkeypatch)
    registrar = gateway.registrar()

    def no_seq_endpoint(device_id: str) -> int | None:
        # As AdminApiRegistrar.highest_seq says it for a gateway older than GET .../seq, or store_timeout.
        raise GatewayRegistrationError("gateway too old; pass --seq-start N", reason="no_seq_endpoint")

    monkeypatch.setattr(registrar, "highest_seq", no_seq_endpoint)
    before = gateway.puts
    assert await asyncio.to_thread(gateway_holds_own_key, registrar, new, old) == (False, None)
    # Only the compare-and-swap it refused was sent: the board's old key was not added.
    assert gateway.puts == before + 1 and gateway.key("sl-1") is None
    # Registered there with the board's key: still nothing registered (re-keying needs --take-over).
    gateway.registry.enroll("sl-1", key=old.key, **FIELDS)
    assert await asyncio.to_thread(gateway_holds_own_key, registrar, new, old) == (False, None)
    assert gateway.puts == before + 2 and gateway.key("sl-1") == old.key
    assert gateway.registry.get("sl-1").key_version == 1
    # Able to say (its seq endpoint answers): the board's own key is proven by registering it unchanged.
    monkeypatch.setattr(registrar, "highest_seq", AdminApiRegistrar.highest_seq.__get__(registrar))
    assert await asyncio.to_thread(gateway_holds_own_key, registrar, new, old) == (True, old)
    assert await asyncio.to_thread(registrar, old, False) is Registration.UNCHANGED


def test_registry_enroll_by_key_digest_keeps_expect_key_semantics(tmp_path: Path) -> None:
    import hashlib

    from gateway.errors import RegistryError

    old, new, thief = _identities()
    reg = Registry(tmp_path / "registry")
    try:
        reg.enroll("sl-1", key=new.key, **FIELDS)
        digest = hashlib.sha256(new.key).digest()
        with pytest.raises(RegistryError) as wrong:
            reg.enroll("sl-1", key=old.key, replace=True, expect_key_sha256=hashlib.sha256(thief.key).digest(),
                       **FIELDS)
        assert wrong.value.reason == "conflict" and reg.key("sl-1") == new.key
        for bad in ({"expect_key_sha256": digest[:16]}, {"expect_key_sha256": digest, "expect_key": new.key}):
            with pytest.raises(RegistryError) as refused:
                reg.enroll("sl-1", key=old.key, replace=True, **bad, **FIELDS)  # type: ignore[arg-type]
            assert refused.value.reason == "bad_value" and reg.key("sl-1") == new.key
        assert reg.enroll("sl-1", key=old.key, replace=True, expect_key_sha256=digest, **FIELDS) == "replaced"
        assert reg.key("sl-1") == old.key
        with pytest.raises(RegistryError) as gone:
            reg.enroll("sl-2", key=new.key, replace=True, expect_key_sha256=digest, **FIELDS)
        assert gone.value.reason == "unknown_device" and reg.lookup("sl-2") is None
    finally:
        reg.close()
