"""What provision says of the id a re-provisioned board held before: "no longer used", never "retired" (a
registry state now, for a board that moved to another gateway: revoking such an id would be wrong)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
from rich.console import Console

from gateway.registry import Registry
from hil.field.identity import new_identity
from hil.field.provision import ProvisionResult
from hil.field.provision_cmd import _old_id
from hil.field.registration import Registration, register_device


@pytest.mark.parametrize("through_registry", [True, False])
def test_the_old_id_warning_says_no_longer_used_not_retired(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            through_registry: bool) -> None:
    Registry(tmp_path).close()
    old = new_identity(device_id="bin-1", kind="bin", zone="north", lat="52.1", lon="4.2")
    new = new_identity(device_id="bin-2", kind="bin", zone="north", lat="52.1", lon="4.2")
    register_device(tmp_path, old)
    args = argparse.Namespace(registry=tmp_path if through_registry else None, revoke_old=False)
    result = ProvisionResult(identity=new, device_changed=True, registration=Registration.ADDED, replaced=old)
    out = Console(file=io.StringIO())
    assert _old_id(out, args, result) == ("registered" if through_registry else "unknown")
    said = " ".join(capsys.readouterr().err.split())
    assert "if bin-1 is no longer used, revoke it" in said or "if it is no longer used, revoke it" in said, said
    assert "retired" not in said
