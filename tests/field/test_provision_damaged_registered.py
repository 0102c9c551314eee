"""QA: a board whose /identity.json is damaged, and whose id the registry holds, was told to re-run with
--force, which was then refused ("already registered with another key ...; pass --take-over"): the
board's old key cannot be read, so the registration counts as another board's. The advice now carries
--take-over when the registry holds the id."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from gateway.registry import Registry
from hil.sim.board import VirtualBoard
from conftest import CliRun

pytestmark = [pytest.mark.timeout(170), pytest.mark.slow, pytest.mark.usefixtures("sim_available")]


async def test_the_advice_for_a_damaged_identity_of_a_registered_id_works_as_given(
        tmp_path: Path, civicedge_cli: CliRun) -> None:
    run = civicedge_cli
    registry = tmp_path / "registry"
    Registry(registry).close()
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=10)
    await board.start()
    try:
        port = board.console_path
        prov = ["provision", "--port", port, "--id", "sl-0080", "--zone", "centre", "--location", "52.37,4.89",
                "--board", "streetlight-esp32", "--registry", str(registry), "--skip-firmware-check"]  # as echoed
        assert (await run(*prov))[0] == 0
        (flash / "identity.json").write_bytes(b'{"id": "sl-0080", "key": "ab')

        rc, out = await run(*prov)
        assert rc == 2, out
        advice = shlex.join(["civicedge", *prov, "--force", "--take-over"])
        assert out.endswith(f"has a damaged /identity.json (is not valid JSON); replace it with: {advice} "
                            "(--take-over: only if sl-0080 was this board's; a board holding it is refused from then "
                            "on)"), out

        rc, out = await run(*shlex.split(advice)[1:])
        assert rc == 0, out
        assert "identity written; registry: replaced" in out, out
    finally:
        await board.stop()
