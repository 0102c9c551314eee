"""Review H1: behind the admin API the rollback of a refused identity write put back the board's own key
even when the gateway did not hold it before (a key rotated away after a leak; a gateway that never had
the id) and said "as before". Now the gateway is asked first: a registration is put back only when the
gateway confirmed holding the board's key, and an id it holds with another key needs --take-over (as
with --registry). Registry.enroll(expect_key=) is the registry side's compare-and-swap (review M1)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import RegistryError
from gateway.registry import Registry
from hil.dut import Dut
from hil.dut.errors import DeviceError
from hil.field.device import open_board
from hil.field.errors import DeviceIOError, GatewayRegistrationError
from hil.field.identity import Identity, new_identity
from hil.field.provision import provision_board
from hil.field.registration import Registration, register_device
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(200), pytest.mark.slow, pytest.mark.usefixtures("sim_available")]

FIELDS = dict(kind="streetlight", zone="centre", lat="52.37", lon="4.89")


class Gateway:
    """What the admin API does server side (PUT = Registry.enroll; GET seq: None for an unknown id)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        Registry(directory).close()
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, identity: Identity, force: bool) -> Registration:
        self.calls.append((identity.fingerprint, force))
        return register_device(self.directory, identity, force=force)

    def replace_expecting(self, identity: Identity, expected: Identity) -> Registration:
        """PUT with expect_key_sha256 = Registry.enroll's compare-and-swap."""
        reg = Registry(self.directory)
        try:
            return Registration(reg.enroll(identity.id, kind=identity.kind, zone=identity.zone, lat=identity.lat,
                                           lon=identity.lon, key=identity.key, replace=True,
                                           expect_key=expected.key))
        except RegistryError as exc:
            raise GatewayRegistrationError(str(exc), reason=exc.reason) from None
        finally:
            reg.close()

    def highest_seq(self, device_id: str) -> int | None:
        return 0 if self.key(device_id) is not None else None

    def key(self, device_id: str) -> bytes | None:
        reg = Registry(self.directory)
        try:
            return reg.key(device_id) if reg.lookup(device_id) is not None else None
        finally:
            reg.close()


def _refuse_identity_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Dut.write_file

    def write_file(self: Dut, path: str, data: bytes, **kw: Any) -> None:
        if path.lstrip("/") != "identity.json":
            return real(self, path, data, **kw)
        raise DeviceError(url=self.url, traceback="OSError: [Errno 28] ENOSPC", stdout="", code="", secret=True)

    monkeypatch.setattr(Dut, "write_file", write_file)


async def _on_board(tmp_path: Path, scenario: Any) -> None:
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", install=False, speed=10)
    await board.start()
    try:
        def run() -> None:
            dut = open_board(board.console_path)
            try:
                scenario(dut)
            finally:
                dut.close()
        await asyncio.to_thread(run)
    finally:
        await board.stop()


async def test_the_gateways_confirmed_registration_of_the_boards_key_is_put_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = Gateway(tmp_path / "gw")

    def scenario(dut: Dut) -> None:
        first = provision_board(dut, device_id="sl-a", registrar=gw, **FIELDS)
        _refuse_identity_writes(monkeypatch)
        with pytest.raises(DeviceIOError) as err:
            provision_board(dut, device_id="sl-a", registrar=gw, force=True, discard_unsent=True, **FIELDS)
        assert err.value.details.get("registry_restored") is True
        assert "the registry was restored (sl-a is registered with key" in str(err.value)
        assert gw.key("sl-a") == first.identity.key

    await _on_board(tmp_path, scenario)


async def test_a_key_the_gateway_rotated_away_is_not_put_back_and_needs_take_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = Gateway(tmp_path / "gw")

    def scenario(dut: Dut) -> None:
        first = provision_board(dut, device_id="sl-a", registrar=gw, **FIELDS)
        reg = Registry(gw.directory)
        reg.rotate_key("sl-a")  # the board's key leaked: the admin rotated it
        reg.close()
        rotated = gw.key("sl-a")
        _refuse_identity_writes(monkeypatch)
        # As with --registry: the id holds a key this board does not have.
        with pytest.raises(GatewayRegistrationError) as refused:
            provision_board(dut, device_id="sl-a", registrar=gw, force=True, discard_unsent=True, **FIELDS)
        assert refused.value.details.get("reason") == "conflict" and "--take-over" in str(refused.value)
        assert gw.key("sl-a") == rotated
        with pytest.raises(DeviceIOError) as err:
            provision_board(dut, device_id="sl-a", registrar=gw, force=True, take_over=True, discard_unsent=True,
                            **FIELDS)
        assert not err.value.details.get("registry_restored"), err.value
        assert gw.key("sl-a") not in (first.identity.key, rotated)  # the new key, never the leaked one

    await _on_board(tmp_path, scenario)


async def test_a_gateway_that_never_held_the_id_is_not_given_another_gateways_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = Gateway(tmp_path / "gw-x"), Gateway(tmp_path / "gw-y")

    def scenario(dut: Dut) -> None:
        first = provision_board(dut, device_id="sl-c", registrar=x, **FIELDS)
        _refuse_identity_writes(monkeypatch)
        with pytest.raises(DeviceIOError) as err:
            provision_board(dut, device_id="sl-c", registrar=y, force=True, discard_unsent=True, **FIELDS)
        assert not err.value.details.get("registry_restored"), err.value
        assert y.key("sl-c") not in (None, first.identity.key)
        assert [force for _fp, force in y.calls] == [True]  # only the new key was registered there

    await _on_board(tmp_path, scenario)


def test_enroll_with_expect_key_replaces_only_the_key_it_expects(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry")
    try:
        a, b, c = (new_identity(device_id="sl-1", **FIELDS) for _ in range(3))
        reg.enroll("sl-1", key=a.key, **FIELDS)
        with pytest.raises(RegistryError) as err:
            reg.enroll("sl-1", key=c.key, replace=True, expect_key=b.key, **FIELDS)
        assert err.value.reason == "conflict"
        assert reg.key("sl-1") == a.key
        assert reg.enroll("sl-1", key=c.key, replace=True, expect_key=a.key, **FIELDS) == "replaced"
        assert reg.key("sl-1") == c.key
        with pytest.raises(RegistryError) as gone:
            reg.enroll("sl-2", key=b.key, replace=True, expect_key=a.key, **FIELDS)
        assert gone.value.reason == "unknown_device" and reg.lookup("sl-2") is None
    finally:
        reg.close()


class _Answering:
    """A board stand-in whose free-space question ends in ``error`` (review L2)."""

    url = "/dev/ttyFAKE"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.asked = 0

    def eval_code(self, code: str, *, timeout_s: float = 10.0) -> Any:
        self.asked += 1
        raise self.error

    def enter_raw_repl(self, *, timeout_s: float = 5.0) -> None:
        pass

    def exec(self, code: str, *, timeout_s: float = 10.0) -> str:
        return ""


def test_only_a_board_without_statvfs_passes_the_room_check_unchecked() -> None:
    from hil.dut.errors import DeviceTimeoutError
    from hil.field.provision_write import check_identity_room

    ident = new_identity(device_id="sl-1", **FIELDS)
    no_statvfs = DeviceError(url="x", traceback="AttributeError: 'module' object has no attribute 'statvfs'",
                             stdout="", code="")
    check_identity_room(_Answering(no_statvfs), ident)  # type: ignore[arg-type]
    lost = _Answering(DeviceTimeoutError(url="x", operation="exec", timeout_s=30.0))
    with pytest.raises(DeviceIOError) as err:
        check_identity_room(lost, ident)  # type: ignore[arg-type]
    assert "was lost while checking its free flash" in str(err.value) and "nothing was registered" in str(err.value)
    other = DeviceError(url="x", traceback="OSError: [Errno 5] EIO", stdout="", code="")
    with pytest.raises(DeviceIOError, match="cannot read the free flash"):
        check_identity_room(_Answering(other), ident)  # type: ignore[arg-type]
