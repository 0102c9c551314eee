"""QA: a provision interrupted between the registry's INSERT and its key file left a row with no key
file, and every retry (the printed `--force --take-over` recovery included) failed with "no key stored".
Registration is now all or nothing, and a registry already damaged so is repaired by a replace."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.errors import RegistryError
from gateway.registry import Registry, devices
from hil.field.errors import GatewayRegistrationError
from hil.field.identity import new_identity
from hil.field.registration import register_device, registered_device, registry_problem

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
PLACE = {"kind": "streetlight", "zone": "centre", "lat": "52.37", "lon": "4.89"}


def _interrupt(*_args: object) -> None:
    raise KeyboardInterrupt


def test_add_interrupted_before_the_key_file_leaves_nothing_registered(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry(tmp_path / "reg")
    try:
        with monkeypatch.context() as m:
            m.setattr(devices, "_write_private", _interrupt)
            with pytest.raises(KeyboardInterrupt):
                reg.enroll("sl-1", key=KEY_A, **PLACE)
        assert reg.lookup("sl-1") is None
        # A plain re-run now works, and leaves a 0600 key file.
        assert reg.enroll("sl-1", key=KEY_A, **PLACE) == "added"
        assert reg.key("sl-1") == KEY_A
        assert stat.S_IMODE(reg.key_path("sl-1").stat().st_mode) == 0o600
    finally:
        reg.close()
    reopened = Registry(tmp_path / "reg", create=False)  # the transaction was not left open in the file
    try:
        assert [r.id for r in reopened.list()] == ["sl-1"]
    finally:
        reopened.close()


def test_rotate_interrupted_keeps_the_old_key_and_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry(tmp_path / "reg")
    try:
        reg.enroll("sl-1", key=KEY_A, **PLACE)
        with monkeypatch.context() as m:
            m.setattr(devices, "_write_private", _interrupt)
            with pytest.raises(KeyboardInterrupt):
                reg.enroll("sl-1", key=KEY_B, replace=True, **PLACE)
        assert reg.key("sl-1") == KEY_A and reg.get("sl-1").key_version == 1
        assert reg.enroll("sl-1", key=KEY_B, replace=True, **PLACE) == "replaced"
        assert reg.key("sl-1") == KEY_B and reg.get("sl-1").key_version == 2
    finally:
        reg.close()


def test_a_row_without_key_file_is_named_and_repaired_by_a_replace(tmp_path: Path) -> None:
    reg_dir = tmp_path / "reg"
    reg = Registry(reg_dir)
    try:
        reg.enroll("sl-1", key=KEY_A, **PLACE)
    finally:
        reg.close()
    (reg_dir / "keys" / "sl-1.key").unlink()  # as an older version left it after an interrupt

    rec = registered_device(reg_dir, "sl-1")  # was: "cannot read registry ...: no key stored"
    assert rec is not None and rec.key is None and "no key file" in str(rec.key_problem)
    ident = new_identity(device_id="sl-1", **PLACE)
    status, problem = registry_problem(reg_dir, ident, port="/dev/ttyUSB0")
    assert "WITHOUT A USABLE KEY" in status
    assert problem is not None and "--force --take-over" in problem and "no key file" in problem

    with pytest.raises(GatewayRegistrationError, match="without a usable key.*--force --take-over") as refused:
        register_device(reg_dir, ident)
    assert refused.value.details["reason"] == "conflict"
    reg = Registry(reg_dir)
    try:
        with pytest.raises(RegistryError, match="no usable key") as exc:
            reg.enroll("sl-1", key=KEY_B, **PLACE)
        assert exc.value.reason == "conflict"  # the admin API answers 409, not 503
    finally:
        reg.close()

    assert register_device(reg_dir, ident, force=True).value == "replaced"
    rec = registered_device(reg_dir, "sl-1")
    assert rec is not None and rec.key == ident.key
    assert registry_problem(reg_dir, ident, port="/dev/ttyUSB0")[1] is None
