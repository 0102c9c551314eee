"""civicedge flash: --help names the MicroPython image of every chip a board can have (the S3 was
missing), and the 'flashed NAME' line says which file described a board that is not a shipped one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from field_cli import civicedge

from gateway.resources import boards_dir
from hil.boards import CHIPS as BOARD_CHIPS
from hil.sim.board import VirtualBoard

pytestmark = pytest.mark.timeout(200)


def test_help_lists_the_image_of_every_board_chip() -> None:
    done = subprocess.run([sys.executable, "-m", "hil.cli.main", "flash", "--help"], capture_output=True, text=True,
                          timeout=60, check=True)
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    # micropython.org/download's names for the generic boards.
    expected = {"esp32": "ESP32_GENERIC-*.bin", "esp32c3": "ESP32_GENERIC_C3-*.bin", "esp32s3": "ESP32_GENERIC_S3-*.bin"}
    assert set(expected) == set(BOARD_CHIPS), "a chip was added: say here which image it takes"
    for chip, image in expected.items():
        assert f"{chip} {image}" in lines, done.stdout
    assert "CIVICEDGE_BOARDS" in done.stdout  # --board says where names are looked up


def _own_board(where: Path, name: str) -> Path:
    """The shipped streetlight under another name: a site's own board file."""
    text = (boards_dir() / "streetlight-esp32.toml").read_text()
    assert text.count('name = "streetlight-esp32"') == 1
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{name}.toml"
    path.write_text(text.replace('name = "streetlight-esp32"', f'name = "{name}"'))
    return path


@pytest.mark.slow
async def test_flashed_line_says_where_an_own_definition_came_from(tmp_path: Path, sim_available: None,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site-boards"
    by_path = _own_board(tmp_path / "mine", "sl-depot")
    _own_board(site, "sl-site")
    monkeypatch.setenv("CIVICEDGE_BOARDS", str(site))  # the CLI runs in a child: it inherits this
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", install=False, speed=10)
    await board.start()
    try:
        runs = {}
        for given in ("sl-site", str(by_path), "streetlight-esp32"):
            rc, out = await civicedge("flash", "--firmware-only", "--board", given, "--port", board.console_path)
            assert rc == 0, out
            runs[given] = " ".join(out.split())
    finally:
        await board.stop()
    port = board.console_path
    assert f"flashed sl-site (definition {site / 'sl-site.toml'}, found through CIVICEDGE_BOARDS) on {port}: " \
        in runs["sl-site"], runs["sl-site"]
    assert f"flashed sl-depot (definition {by_path}) on {port}: " in runs[str(by_path)], runs[str(by_path)]
    assert f"flashed streetlight-esp32 on {port}: " in runs["streetlight-esp32"], runs["streetlight-esp32"]
