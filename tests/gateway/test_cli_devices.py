"""``civicedge gateway devices`` and the registry rules behind it: revocation."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import RegistryError
from gateway.registry import Registry
from hil.cli.main import main

WHERE = {"kind": "bin", "zone": "north", "lat": "52.1", "lon": "4.2"}
KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))


def devices(registry: Path, *argv: str) -> list[str]:
    return ["gateway", "devices", "--registry", str(registry), *argv]


def add_argv(registry: Path, device_id: str, *extra: str) -> list[str]:
    return devices(registry, "add", "--id", device_id, "--kind", "bin", "--zone", "north", "--location", "52.1,4.2",
                   *extra)


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry")
    registry.add("b1", key=KEY_A, **WHERE)
    return registry


# --- revocation, as in the admin API ----------------------------------------------------------------

def test_second_revoke_fails_as_already_revoked(tmp_path: Path, reg: Registry,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(devices(reg.path, "revoke", "b1")) == 0
    assert "revoked b1" in capsys.readouterr().out
    assert main(devices(reg.path, "revoke", "b1")) == 1
    out, err = capsys.readouterr()
    assert out == "" and "error (already_revoked): device b1 is already revoked" in err
    with pytest.raises(RegistryError) as info:
        reg.revoke("b1")
    assert info.value.reason == "already_revoked"
    with pytest.raises(RegistryError) as info:
        reg.revoke("ghost")
    assert info.value.reason == "unknown_device"


def test_the_key_of_a_revoked_device_is_not_rotated(reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    reg.revoke("b1")
    assert main(devices(reg.path, "rotate-key", "b1")) == 1
    assert "error (revoked): device b1 is revoked" in capsys.readouterr().err
    for key in (None, KEY_B):
        with pytest.raises(RegistryError) as info:
            reg.rotate_key("b1", key=key)
        assert info.value.reason == "revoked"
    assert reg.get("b1").key_version == 1 and reg.key("b1") == KEY_A
