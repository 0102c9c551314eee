"""Re-provisioning a board under another id never leaves the old id behind silently: a warning names
the exact revoke command, and ``--revoke-old`` revokes it (only when it holds the board's old key)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from field_cli import civicedge

from gateway.registry import Registry
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(170), pytest.mark.slow]


def _revoked(registry: Path, device_id: str) -> bool:
    reg = Registry(registry)
    try:
        rec = reg.get(device_id)
        return bool(rec.revoked)
    finally:
        reg.close()


async def test_old_id_is_named_or_revoked(tmp_path: Path, sim_available: None) -> None:
    registry = tmp_path / "registry"
    Registry(registry).close()
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", install=False, speed=10)
    await board.start()
    try:
        port = board.console_path

        async def provision(device_id: str, *extra: str) -> tuple[int, str]:
            return await civicedge("provision", "--port", port, "--id", device_id, "--zone", "centre",
                                   "--location", "-33.8688,151.2093", "--registry", str(registry), "--board",
                                   "streetlight-esp32", "--skip-firmware-check", "--stay-at-repl", *extra)

        rc, out = await provision("sl-old")
        assert rc == 0, out
        # The next step spells the real options (no reports.sqlite beside this registry: its placeholder).
        assert (f"civicedge check --port {port} --registry {registry} --db GATEWAY-STORE (its [storage] path)"
                in " ".join(out.split())), out
        rc, out = await provision("sl-new", "--force")
        assert rc == 0, out
        flat = " ".join(out.split())
        command = f"civicedge gateway devices revoke sl-old --registry {shlex.quote(str(registry))}"
        assert "old id sl-old stays registered with the key this board held" in flat and command in flat, out
        assert not _revoked(registry, "sl-old")  # not revoked behind the technician's back
        rc, out = await civicedge(*shlex.split(command)[1:])
        assert rc == 0 and _revoked(registry, "sl-old"), out

        rc, out = await provision("sl-third", "--force", "--revoke-old")
        assert rc == 0 and "old id sl-new: revoked in the registry" in out, out
        assert _revoked(registry, "sl-new") and not _revoked(registry, "sl-third")

        # sl-third is taken over by another board: its old id then belongs to that board, never revoked.
        reg = Registry(registry)
        try:
            reg.enroll("sl-third", kind="streetlight", zone="centre", lat="-33.8688", lon="151.2093",
                       key=bytes(range(32)), replace=True)
        finally:
            reg.close()
        rc, out = await provision("sl-fourth", "--force", "--revoke-old")
        assert rc == 0 and "old id sl-third: registered with another board's key; left as it is" in out, out
        assert not _revoked(registry, "sl-third")
    finally:
        await board.stop()


def test_revoke_old_needs_force_and_a_local_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hil.cli.main import main as civicedge_main

    base = ["provision", "--port", "/dev/ttyUSB-missing", "--id", "sl-1", "--zone", "centre", "--location", "52.1,4.2"]
    for extra, says in ((["--registry", str(tmp_path), "--revoke-old"], "--revoke-old does nothing without --force"),
                        (["--gateway", "http://127.0.0.1:1", "--force", "--revoke-old"], "--revoke-old needs --registry")):
        with pytest.raises(SystemExit) as exited:
            civicedge_main([*base, *extra])
        assert exited.value.code == 2 and says in capsys.readouterr().err
